//! Membership of the coordinator group: the `ClusterService` add/remove
//! handlers (raft conf changes on the leader) and a new node's join request.

use crate::error::{CoordinatorError, Result};
use crate::node::{Member, MembershipChange, NodeHandle};
use crate::state::Rejection;
use crate::storage::AddressBook;
use quarry_proto::NodeId;
use quarry_proto::v1::{self, cluster_service_client::ClusterServiceClient};
use quarry_security::TlsFiles;
use std::time::{Duration, Instant};
use tonic::Status;

/// How long a joining node keeps asking the cluster to add it.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The members as `CoordinatorInfo`s.
pub fn coordinators(node: &NodeHandle) -> Vec<v1::CoordinatorInfo> {
    node.members()
        .unwrap_or_default()
        .into_iter()
        .map(|m| v1::CoordinatorInfo {
            node_id: m.id.0,
            url: m.url.unwrap_or_default(),
            voter: m.voter,
        })
        .collect()
}

/// An error as a status; `NotLeader` carries the leader's URL in the
/// `quarry-leader` metadata, which quarry-client follows.
pub fn status_for(node: &NodeHandle, error: CoordinatorError) -> Status {
    let leader = match &error {
        CoordinatorError::NotLeader { leader, .. } => Some(*leader),
        _ => None,
    };
    let mut status = Status::from(error);
    if let Some(url) = leader.and_then(|l| node.peer_url(l))
        && let Ok(value) = url.parse()
    {
        status
            .metadata_mut()
            .insert(quarry_proto::LEADER_METADATA_KEY, value);
    }
    status
}

fn rejection(rejection: Rejection) -> CoordinatorError {
    match rejection {
        Rejection::NotFound(m) => CoordinatorError::NotFound(m),
        Rejection::Invalid(m) => CoordinatorError::InvalidArgument(m),
        Rejection::Conflict(m) => CoordinatorError::FailedPrecondition(m),
        Rejection::Denied(m) => CoordinatorError::PermissionDenied(m),
    }
}

async fn change(node: &NodeHandle, change: MembershipChange) -> Result<(), Status> {
    match node.change_membership(change).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(r)) => Err(status_for(node, rejection(r))),
        Err(e) => Err(status_for(node, e)),
    }
}

/// `ClusterService.AddCoordinator`.
#[tracing::instrument(skip_all, fields(node = request.node_id, url = %request.url))]
pub async fn add(
    node: &NodeHandle,
    request: v1::AddCoordinatorRequest,
) -> Result<v1::MembershipResponse, Status> {
    let id = NodeId(request.node_id);
    let url = request.url.trim().to_owned();
    crate::node::validate_url(&url).map_err(|e| status_for(node, e))?;
    let members = node.members().map_err(|e| status_for(node, e))?;
    // A newcomer learns every address from the group; one it cannot learn
    // is a member it could never answer.
    if let Some(unknown) = members.iter().find(|m| m.id != id && m.url.is_none()) {
        return Err(status_for(
            node,
            CoordinatorError::FailedPrecondition(format!(
                "coordinator {} has no known URL (started on 0.0.0.0 without --advertise-url?); record it first with `quarry cluster add-coordinator --node-id {} --url http://HOST:PORT`",
                unknown.id, unknown.id
            )),
        ));
    }
    let existing = members.iter().find(|m| m.id == id);
    // Another process claiming a member's id would inherit its votes and log
    // position without its disk: refuse. Only a URL nobody knew may be set.
    if let Some(Member {
        url: Some(other), ..
    }) = existing
        && *other != url
    {
        return Err(status_for(
            node,
            CoordinatorError::AlreadyExists(format!(
                "coordinator {id} is already a member at {other}; give the new node an unused --node-id, or remove {id} first"
            )),
        ));
    }
    // A retried join (or a restart of a joined node) changes nothing.
    let known = existing.is_some_and(|m| m.url.is_some());
    if !known {
        change(node, MembershipChange::Add { node: id, url }).await?;
        tracing::info!("coordinator added");
    }
    Ok(v1::MembershipResponse {
        coordinators: coordinators(node),
    })
}

/// `ClusterService.RemoveCoordinator`. Removing the leader first hands
/// leadership to another voter and answers UNAVAILABLE naming it, so the
/// client retries there.
#[tracing::instrument(skip_all, fields(node = request.node_id))]
pub async fn remove(
    node: &NodeHandle,
    request: v1::RemoveCoordinatorRequest,
) -> Result<v1::MembershipResponse, Status> {
    let id = NodeId(request.node_id);
    let status = node.status();
    if status.is_leader && id.0 == status.id {
        node.transfer_leadership()
            .await
            .map_err(|e| status_for(node, e))?;
        let mut changes = node.subscribe();
        let moved = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let s = *changes.borrow_and_update();
                if !s.is_leader && s.leader != 0 && s.leader != s.id {
                    return s.leader;
                }
                if changes.changed().await.is_err() {
                    return 0;
                }
            }
        })
        .await
        .unwrap_or(0);
        return Err(status_for(
            node,
            CoordinatorError::NotLeader {
                node: id.0,
                leader: moved,
            },
        ));
    }
    change(node, MembershipChange::Remove { node: id }).await?;
    tracing::info!("coordinator removed");
    Ok(v1::MembershipResponse {
        coordinators: coordinators(node),
    })
}

/// Asks the group reachable at `join_url` to add this node (`node_id` at
/// `url`), following the leader, until it answers or [`JOIN_TIMEOUT`]
/// passes. Returns the membership the leader reported, URLs included.
#[tracing::instrument(skip_all, fields(node = node_id.0, %url, %join_url))]
pub async fn join(
    node_id: NodeId,
    url: &str,
    join_url: &str,
    tls: Option<&TlsFiles>,
) -> Result<AddressBook> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut target = join_url.to_owned();
    loop {
        let last_error = match ask_to_join(node_id, url, &target, tls).await {
            Ok(members) => {
                tracing::info!(members = members.len(), "admitted to the coordinator group");
                return Ok(members);
            }
            Err(JoinError::Redirect(leader)) => {
                if Instant::now() < deadline {
                    target = leader;
                    continue;
                }
                format!("redirected to {leader}")
            }
            Err(JoinError::Fatal(status)) => {
                return Err(CoordinatorError::FailedPrecondition(format!(
                    "the coordinator group at {join_url} refused to add node {node_id} at {url}: {}",
                    status.message()
                )));
            }
            Err(JoinError::Retry(why)) => why,
        };
        if Instant::now() >= deadline {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "could not join the coordinator group at {join_url} within {JOIN_TIMEOUT:?} ({last_error}); check that it is up and has a leader"
            )));
        }
        tracing::debug!(error = %last_error, "join attempt failed; retrying");
        target = join_url.to_owned();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

enum JoinError {
    Redirect(String),
    Retry(String),
    Fatal(Status),
}

async fn ask_to_join(
    node_id: NodeId,
    url: &str,
    target: &str,
    tls: Option<&TlsFiles>,
) -> std::result::Result<AddressBook, JoinError> {
    let endpoint = quarry_security::tls::endpoint(target, tls)
        .map_err(|e| JoinError::Fatal(Status::invalid_argument(format!("bad --join URL: {e}"))))?
        .connect_timeout(Duration::from_secs(2));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| JoinError::Retry(format!("cannot connect to {target}: {e}")))?;
    let mut client = ClusterServiceClient::new(channel);
    let request = v1::AddCoordinatorRequest {
        node_id: node_id.0,
        url: url.to_owned(),
    };
    match client.add_coordinator(request).await {
        Ok(response) => Ok(response
            .into_inner()
            .coordinators
            .into_iter()
            .filter(|c| !c.url.is_empty())
            .map(|c| (c.node_id, c.url))
            .collect()),
        Err(status) => match status.code() {
            tonic::Code::Unavailable => {
                match status
                    .metadata()
                    .get(quarry_proto::LEADER_METADATA_KEY)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(leader) if leader != target => Err(JoinError::Redirect(leader.to_owned())),
                    _ => Err(JoinError::Retry(status.message().to_owned())),
                }
            }
            tonic::Code::DeadlineExceeded | tonic::Code::FailedPrecondition => {
                // No quorum yet, or another change in flight: wait and retry.
                Err(JoinError::Retry(status.message().to_owned()))
            }
            _ => Err(JoinError::Fatal(status)),
        },
    }
}

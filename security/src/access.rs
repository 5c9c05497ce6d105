//! Which role may call which RPC: one table for every service Quarry
//! serves, enforced by [`AccessLayer`] before a request reaches its
//! handler. A path the table does not name is refused, so an RPC added
//! without a rule fails closed (and `every_rpc_has_a_rule` fails).
//!
//! Checks that need the request's contents stay with the handlers: a
//! worker acts only as the worker its certificate names, a raft message is
//! accepted only from the member its certificate names, a coordinator may
//! add only itself.

use crate::audit::{AuditEvent, AuditSink, AuditTarget};
use crate::identity::{Principal, Role};
use crate::listen::PeerInfo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Who may call an RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can connect (health checks, reflection).
    Public,
    /// Principals of these roles.
    Roles(&'static [Role]),
}

/// What an RPC does, for the audit trail (see [`crate::audit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Reads only: recorded when refused.
    Read,
    /// Changes replicated state: recorded, accepted or refused.
    Write,
    /// Traffic between cluster nodes (raft, heartbeats, task reports):
    /// recorded when refused, by the table or by the handler's identity
    /// checks (a worker reporting as another), not when accepted.
    Node,
}

use Role::{Admin, Automation, Coordinator, Hunter, Viewer, Worker};

/// Every API role: reading is open to all of them.
const READERS: &[Role] = &[Admin, Hunter, Automation, Viewer];
/// Running hunts.
const HUNTERS: &[Role] = &[Admin, Hunter, Automation];
/// Writing modules and judging findings.
const AUTHORS: &[Role] = &[Admin, Hunter];
/// Running the cluster.
const ADMINS: &[Role] = &[Admin];
/// Sending logs to a worker.
const SHIPPERS: &[Role] = &[Admin, Automation];

/// One rule per gRPC method path.
pub const RULES: &[(&str, Access, Effect)] = &[
    // Modules.
    (
        "/quarry.v1.ModuleService/UploadModule",
        Access::Roles(AUTHORS),
        Effect::Write,
    ),
    (
        "/quarry.v1.ModuleService/GetModule",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.ModuleService/ListModules",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.ModuleService/DeleteModule",
        Access::Roles(AUTHORS),
        Effect::Write,
    ),
    // Hunts.
    (
        "/quarry.v1.HuntService/SubmitHunt",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.HuntService/GetHunt",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.HuntService/ListHunts",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.HuntService/CancelHunt",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.HuntService/ResumeHunt",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.HuntService/WatchHunt",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.HuntService/StreamFindings",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.HuntService/QueryResult",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.HuntService/DeleteHunt",
        Access::Roles(AUTHORS),
        Effect::Write,
    ),
    // The cluster. A coordinator may ask to add itself (`--join`).
    (
        "/quarry.v1.ClusterService/ListWorkers",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.ClusterService/ListShards",
        Access::Roles(READERS),
        Effect::Read,
    ),
    // Workers and coordinators read it to find the leader and the members.
    (
        "/quarry.v1.ClusterService/Status",
        Access::Roles(&[Admin, Hunter, Automation, Viewer, Worker, Coordinator]),
        Effect::Read,
    ),
    (
        "/quarry.v1.ClusterService/AddCoordinator",
        Access::Roles(&[Admin, Coordinator]),
        Effect::Write,
    ),
    (
        "/quarry.v1.ClusterService/RemoveCoordinator",
        Access::Roles(ADMINS),
        Effect::Write,
    ),
    // The intel store.
    (
        "/quarry.v1.IntelService/ImportIntel",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.IntelService/ListIntel",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.IntelService/GetIntel",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.IntelService/DeleteIntel",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.WorkerService/FetchIntel",
        Access::Roles(&[Worker]),
        Effect::Read,
    ),
    (
        "/quarry.v1.WorkerService/FetchBaseline",
        Access::Roles(&[Worker]),
        Effect::Read,
    ),
    // Sigma rule packs: as the intel store.
    (
        "/quarry.v1.RulePackService/ImportRulePack",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.RulePackService/ListRulePacks",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.RulePackService/GetRulePack",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.RulePackService/DeleteRulePack",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.WorkerService/FetchRulePack",
        Access::Roles(&[Worker]),
        Effect::Read,
    ),
    // Recurring hunts: automation and hunters manage them.
    (
        "/quarry.v1.ScheduleService/CreateSchedule",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.ScheduleService/ListSchedules",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.ScheduleService/GetSchedule",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.ScheduleService/SetSchedulePaused",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.ScheduleService/DeleteSchedule",
        Access::Roles(HUNTERS),
        Effect::Write,
    ),
    (
        "/quarry.v1.ScheduleService/ListRuns",
        Access::Roles(READERS),
        Effect::Read,
    ),
    // Module-signing keys and policy.
    (
        "/quarry.v1.ClusterService/TrustKey",
        Access::Roles(ADMINS),
        Effect::Write,
    ),
    (
        "/quarry.v1.ClusterService/UntrustKey",
        Access::Roles(ADMINS),
        Effect::Write,
    ),
    (
        "/quarry.v1.ClusterService/ListTrustedKeys",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.ClusterService/SetModulePolicy",
        Access::Roles(ADMINS),
        Effect::Write,
    ),
    // Workers, as the worker their certificate names.
    (
        "/quarry.v1.WorkerService/RegisterWorker",
        Access::Roles(&[Worker]),
        Effect::Write,
    ),
    (
        "/quarry.v1.WorkerService/Heartbeat",
        Access::Roles(&[Worker]),
        Effect::Node,
    ),
    (
        "/quarry.v1.WorkerService/TaskStream",
        Access::Roles(&[Worker]),
        Effect::Read,
    ),
    (
        "/quarry.v1.WorkerService/ReportTask",
        Access::Roles(&[Worker]),
        Effect::Node,
    ),
    (
        "/quarry.v1.WorkerService/FetchModule",
        Access::Roles(&[Worker]),
        Effect::Read,
    ),
    // A worker's log intake.
    (
        "/quarry.v1.IngestService/Ingest",
        Access::Roles(SHIPPERS),
        Effect::Write,
    ),
    // Raft, between members.
    (
        "/quarry.v1.RaftService/Send",
        Access::Roles(&[Coordinator]),
        Effect::Node,
    ),
    (
        "/quarry.v1.RaftService/SendSnapshot",
        Access::Roles(&[Coordinator]),
        Effect::Node,
    ),
    // Bearer tokens.
    (
        "/quarry.v1.TokenService/CreateToken",
        Access::Roles(ADMINS),
        Effect::Write,
    ),
    (
        "/quarry.v1.TokenService/ListTokens",
        Access::Roles(ADMINS),
        Effect::Read,
    ),
    (
        "/quarry.v1.TokenService/RevokeToken",
        Access::Roles(ADMINS),
        Effect::Write,
    ),
    // Triage.
    (
        "/quarry.v1.TriageService/ListCases",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.TriageService/GetCase",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.TriageService/UpdateCase",
        Access::Roles(AUTHORS),
        Effect::Write,
    ),
    (
        "/quarry.v1.TriageService/ApplyConfig",
        Access::Roles(ADMINS),
        Effect::Write,
    ),
    (
        "/quarry.v1.TriageService/GetConfig",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.TriageService/ListProposals",
        Access::Roles(READERS),
        Effect::Read,
    ),
    (
        "/quarry.v1.TriageService/DecideProposal",
        Access::Roles(ADMINS),
        Effect::Write,
    ),
    (
        "/quarry.v1.TriageService/Summary",
        Access::Roles(READERS),
        Effect::Read,
    ),
    // The audit trail: admins read it; nodes hand their records to the leader.
    (
        "/quarry.v1.AuditService/ListAudit",
        Access::Roles(ADMINS),
        Effect::Read,
    ),
    (
        "/quarry.v1.AuditService/ForwardAudit",
        Access::Roles(&[Coordinator, Worker]),
        Effect::Node,
    ),
    // Health and reflection, for load balancers and grpcurl.
    ("/grpc.health.v1.Health/Check", Access::Public, Effect::Read),
    ("/grpc.health.v1.Health/Watch", Access::Public, Effect::Read),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Public,
        Effect::Read,
    ),
];

/// The rule for a method path.
pub fn rule(path: &str) -> Option<(Access, Effect)> {
    RULES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, access, effect)| (*access, *effect))
}

/// Why a call is refused, or `None` if it may go on. `secure` is false
/// only for a plaintext loopback server (development), which lets every
/// call through: anyone who can reach it is on this machine.
pub fn check(path: &str, principal: Option<&Principal>, secure: bool) -> Option<tonic::Status> {
    if !secure {
        return None;
    }
    let Some((access, _)) = rule(path) else {
        return Some(tonic::Status::permission_denied(format!(
            "{path} has no access rule; nobody may call it"
        )));
    };
    let roles = match access {
        Access::Public => return None,
        Access::Roles(roles) => roles,
    };
    let Some(principal) = principal else {
        return Some(tonic::Status::unauthenticated(format!(
            "{path} needs a caller identity: connect with a client certificate from the cluster's CA (--tls-cert/--tls-key, made with `quarry certs issue`) or send a bearer token (--token)"
        )));
    };
    if roles.contains(&principal.role) {
        return None;
    }
    Some(tonic::Status::permission_denied(format!(
        "{principal} may not call {path}: it needs the role {}",
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    )))
}

/// Who a request authenticated as, by certificate or bearer token; set by
/// [`AccessLayer`] on every request it lets through.
#[derive(Clone, Debug)]
pub struct Caller(pub Option<Principal>);

/// The principal a request authenticated as (certificate or token), if any.
pub fn principal_of<T>(request: &tonic::Request<T>) -> Option<&Principal> {
    match request.extensions().get::<Caller>() {
        Some(caller) => caller.0.as_ref(),
        None => PeerInfo::of(request).and_then(|peer| peer.principal.as_ref()),
    }
}

/// Checks bearer tokens against the cluster's token records.
pub trait TokenCheck: Send + Sync + 'static {
    /// The principal `token` authenticates, or why it does not (unknown,
    /// wrong secret, expired, revoked), phrased for the caller.
    fn check(&self, token: &str) -> Result<Principal, String>;
}

/// Whether a request came over TLS (a plaintext server is a loopback
/// development server, where node identities are not checked).
pub fn is_secure<T>(request: &tonic::Request<T>) -> bool {
    PeerInfo::of(request).is_some_and(|peer| peer.tls)
}

/// Enforces [`RULES`] in front of a tonic server's routes, and tells an
/// [`AuditSink`] what the audit trail records (see [`crate::audit`]).
#[derive(Clone)]
pub struct AccessLayer {
    secure: bool,
    tokens: Option<Arc<dyn TokenCheck>>,
    audit: Option<Arc<dyn AuditSink>>,
}

impl AccessLayer {
    /// `secure`: the server is TLS (rules apply) or plaintext on loopback
    /// (every call goes through).
    pub fn new(secure: bool) -> Self {
        Self {
            secure,
            tokens: None,
            audit: None,
        }
    }

    /// Also accepts bearer tokens that `tokens` vouches for, from callers
    /// without a client certificate.
    pub fn with_tokens(mut self, tokens: Arc<dyn TokenCheck>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Records refused calls and mutating calls in `audit`.
    pub fn with_audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(audit);
        self
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AccessLayer`] makes.
#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    layer: AccessLayer,
}

/// Who `request` is: its certificate's principal, else the principal its
/// bearer token authenticates. A token that does not authenticate is an
/// error, not an anonymous call.
fn caller<B>(
    request: &http::Request<B>,
    tokens: Option<&Arc<dyn TokenCheck>>,
) -> Result<Option<Principal>, tonic::Status> {
    let certified = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|peer| peer.principal.clone());
    if certified.is_some() {
        return Ok(certified);
    }
    let Some(header) = request.headers().get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| {
            tonic::Status::unauthenticated("the authorization header is not `Bearer <token>`")
        })?;
    let tokens = tokens.ok_or_else(|| {
        tonic::Status::unauthenticated(
            "this server takes no bearer tokens; use a client certificate",
        )
    })?;
    tokens
        .check(token.trim())
        .map(Some)
        .map_err(tonic::Status::unauthenticated)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let secure = self.layer.secure;
        let verdict = if secure {
            caller(&request, self.layer.tokens.as_ref())
        } else {
            Ok(None)
        };
        let refused = match &verdict {
            Ok(principal) => check(&path, principal.as_ref(), secure),
            Err(status) => Some(status.clone()),
        };
        let remote = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|peer| peer.remote)
            .map(|addr| addr.ip().to_string())
            .unwrap_or_default();
        let (who, role) = match &verdict {
            Ok(Some(principal)) => (principal.to_string(), principal.role.as_str().to_owned()),
            Ok(None) if secure => ("anonymous".to_owned(), String::new()),
            Ok(None) => ("local".to_owned(), String::new()),
            Err(_) => ("bad token".to_owned(), String::new()),
        };
        let base = AuditEvent {
            principal: who,
            role,
            rpc: path.clone(),
            target: String::new(),
            outcome: tonic::Code::Ok,
            detail: String::new(),
            remote,
        };
        if let Some(status) = refused {
            tracing::warn!(caller = %base.principal, path, code = ?status.code(), reason = status.message(), "call refused");
            if let Some(audit) = &self.layer.audit {
                audit.record(AuditEvent {
                    outcome: status.code(),
                    detail: status.message().to_owned(),
                    ..base
                });
            }
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        request
            .extensions_mut()
            .insert(Caller(verdict.ok().flatten()));
        let effect = rule(&path).map(|(_, effect)| effect);
        let (Some(audit), Some(effect @ (Effect::Write | Effect::Node))) =
            (self.layer.audit.clone(), effect)
        else {
            return Box::pin(self.inner.call(request));
        };
        let target = AuditTarget::default();
        request.extensions_mut().insert(target.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let headers = response.headers();
            // A follower's "ask the leader" is retried there, and recorded there.
            if headers.contains_key(quarry_proto::LEADER_METADATA_KEY) {
                return Ok(response);
            }
            // An error is a trailers-only response: its status is in the
            // headers. A success puts `grpc-status: 0` in the trailers.
            let code = headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32);
            let refusal = matches!(
                code,
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
            );
            if effect == Effect::Write || refusal {
                let detail = headers
                    .get("grpc-message")
                    .map(|v| percent_decode(v.as_bytes()))
                    .unwrap_or_default();
                audit.record(AuditEvent {
                    outcome: code,
                    detail,
                    target: target.get(),
                    ..base
                });
            }
            Ok(response)
        })
    }
}

/// Decodes a `grpc-message` header (percent-encoded UTF-8).
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(hi)), Some(Some(lo))) = (
                bytes.get(i + 1).map(|b| hex(*b)),
                bytes.get(i + 2).map(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded_for_the_audit_trail() {
        assert_eq!(
            percent_decode(b"worker:w2 may not act as worker w1%3A a worker%E2%80%A6"),
            "worker:w2 may not act as worker w1: a worker…"
        );
        assert_eq!(percent_decode(b"100% sure %zz"), "100% sure %zz");
    }

    #[test]
    fn rules_refuse_anonymous_callers_and_wrong_roles_and_name_what_is_needed() {
        let viewer = Principal::new(Viewer, "v").expect("principal");
        let hunter = Principal::new(Hunter, "h").expect("principal");
        let submit = "/quarry.v1.HuntService/SubmitHunt";
        assert!(check(submit, Some(&hunter), true).is_none());
        let denied = check(submit, Some(&viewer), true).expect("denied");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied.message().contains("admin or hunter or automation"),
            "{denied:?}"
        );
        let anonymous = check(submit, None, true).expect("denied");
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
        let unknown = check("/quarry.v1.HuntService/Nope", Some(&hunter), true).expect("denied");
        assert!(unknown.message().contains("no access rule"), "{unknown:?}");
        assert!(check("/grpc.health.v1.Health/Check", None, true).is_none());
        assert!(check(submit, None, false).is_none(), "loopback development");
    }
}

#[cfg(test)]
mod coverage {
    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    /// Every RPC of every Quarry service has a rule, and every rule names
    /// an RPC that exists: a new RPC without one fails here (and is
    /// refused at run time).
    #[test]
    fn every_rpc_has_a_rule() {
        let set = FileDescriptorSet::decode(quarry_proto::v1::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut paths = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert!(paths.len() > 30, "found only {paths:?}");
        let missing: Vec<_> = paths
            .iter()
            .filter(|path| super::rule(path).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "RPCs without an access rule: {missing:?}"
        );
        let stale: Vec<_> = super::RULES
            .iter()
            .map(|(path, _, _)| *path)
            .filter(|path| path.starts_with("/quarry.") && !paths.iter().any(|p| p == path))
            .collect();
        assert!(
            stale.is_empty(),
            "rules for RPCs that do not exist: {stale:?}"
        );
    }
}

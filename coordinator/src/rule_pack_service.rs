//! `quarry.v1.RulePackService` (import, list, show, delete Sigma rule
//! packs), the worker's `FetchRulePack`, and the binding of hunts and
//! schedules to packs (`SubmitHuntRequest.rule_packs`). The coordinator
//! that takes an import checks the files and computes the digest; the
//! checked pack is proposed, and versions are numbered at apply.

use crate::rule_packs::{RulePackRecord, Users};
use crate::service::{Api, caller_of, rejection_status};
use crate::state::{Command, HuntSpec, Response};
use quarry_proto::v1;
use std::collections::BTreeMap;
use tonic::{Request, Status};

/// A pack's description.
pub fn pack_info(record: &RulePackRecord) -> v1::RulePackInfo {
    v1::RulePackInfo {
        name: record.name.clone(),
        version: record.version,
        digest: record.digest.clone(),
        rules: u32::try_from(record.rules()).unwrap_or(u32::MAX),
        bytes: record.bytes(),
        source: record.source.clone(),
        imported_by: record.imported_by.clone(),
        imported_ms: record.imported_ms,
    }
}

fn files_of(record: &RulePackRecord) -> Vec<v1::RuleFile> {
    record
        .files
        .iter()
        .map(|(path, text)| v1::RuleFile {
            path: path.clone(),
            text: text.clone(),
        })
        .collect()
}

fn version_text(version: u32) -> String {
    match version {
        0 => String::new(),
        v => format!("@{v}"),
    }
}

impl Api {
    /// Binds `spec` to the rule packs `selectors` name (one
    /// `rule-pack-ref.NAME` parameter each); a schedule's template may
    /// follow the latest version (`NAME@latest`).
    pub(crate) fn bind_rule_packs(
        &self,
        spec: &mut HuntSpec,
        selectors: &[String],
        follow_latest: bool,
    ) -> Result<(), Status> {
        if selectors.is_empty() {
            return Ok(());
        }
        self.shared
            .read(|s| s.bind_rule_packs(spec, selectors, follow_latest))?
            .map_err(rejection_status)
    }
}

#[tonic::async_trait]
impl v1::rule_pack_service_server::RulePackService for Api {
    #[tracing::instrument(skip_all, fields(pack, rules))]
    async fn import_rule_pack(
        &self,
        request: Request<v1::ImportRulePackRequest>,
    ) -> Result<tonic::Response<v1::ImportRulePackResponse>, Status> {
        let (imported_by, _) = caller_of(&request);
        quarry_security::audit::set_target(
            &request,
            format!("rule pack {}", request.get_ref().name),
        );
        let request = request.into_inner();
        tracing::Span::current()
            .record("pack", request.name.as_str())
            .record("rules", request.files.len());
        let mut files = BTreeMap::new();
        for file in request.files {
            if files.insert(file.path, file.text).is_some() {
                return Err(Status::invalid_argument(format!(
                    "rule pack {} lists a rule file twice; each path once",
                    request.name
                )));
            }
        }
        let now_ms = self.shared.clock.now_ms();
        let name = request.name.clone();
        let source = request.source;
        // Hashing up to 16 MiB takes a moment: off the runtime.
        let record = tokio::task::spawn_blocking(move || {
            RulePackRecord::new(&name, files, source, imported_by, now_ms)
        })
        .await
        .map_err(|e| Status::internal(format!("rule pack check failed: {e}")))?
        .map_err(|why| Status::invalid_argument(format!("rule pack {}: {why}", request.name)))?;
        let digest = record.digest.clone();
        let response = self
            .shared
            .propose_write(
                &request.request_id,
                Command::ImportRulePack {
                    record: Box::new(record),
                },
            )
            .await?;
        let Response::RulePack { version, unchanged } = response else {
            return Err(Status::internal(
                "the rule pack import was applied without a version",
            ));
        };
        let pack = self
            .shared
            .read(|s| s.rule_packs.get(&request.name, version).map(pack_info))?
            .filter(|p| p.digest == digest)
            .ok_or_else(|| Status::internal("the imported rule pack vanished"))?;
        tracing::info!(version, unchanged, digest = %pack.digest, "rule pack imported");
        Ok(tonic::Response::new(v1::ImportRulePackResponse {
            pack: Some(pack),
            unchanged,
        }))
    }

    async fn list_rule_packs(
        &self,
        _request: Request<v1::ListRulePacksRequest>,
    ) -> Result<tonic::Response<v1::ListRulePacksResponse>, Status> {
        self.shared.node.read_index().await?;
        let packs = self.shared.read(|s| {
            s.rule_packs
                .packs
                .values()
                .filter_map(|versions| versions.values().next_back())
                .map(pack_info)
                .collect()
        })?;
        Ok(tonic::Response::new(v1::ListRulePacksResponse { packs }))
    }

    #[tracing::instrument(skip_all, fields(pack))]
    async fn get_rule_pack(
        &self,
        request: Request<v1::GetRulePackRequest>,
    ) -> Result<tonic::Response<v1::GetRulePackResponse>, Status> {
        self.shared.node.read_index().await?;
        let request = request.into_inner();
        tracing::Span::current().record("pack", request.name.as_str());
        let answer = self.shared.read(|s| {
            let store = &s.rule_packs;
            let record = match request.version {
                0 => store.latest(&request.name),
                v => store.get(&request.name, v),
            }?;
            let users: Users = s.rule_pack_users();
            let latest = store.latest(&request.name).map(|r| r.version);
            Some(v1::GetRulePackResponse {
                pack: Some(pack_info(record)),
                versions: store.versions(&request.name),
                used_by: users.of(
                    &record.name,
                    Some(record.version),
                    latest == Some(record.version),
                ),
                files: if request.with_rules {
                    files_of(record)
                } else {
                    Vec::new()
                },
            })
        })?;
        answer.map(tonic::Response::new).ok_or_else(|| {
            Status::not_found(format!(
                "no rule pack {}{}; `quarry sigma list` shows the packs",
                request.name,
                version_text(request.version)
            ))
        })
    }

    #[tracing::instrument(skip_all, fields(pack, version))]
    async fn delete_rule_pack(
        &self,
        request: Request<v1::DeleteRulePackRequest>,
    ) -> Result<tonic::Response<v1::DeleteRulePackResponse>, Status> {
        let target = {
            let r = request.get_ref();
            format!(
                "rule pack {}{}{}",
                r.name,
                version_text(r.version),
                if r.force { " (forced)" } else { "" }
            )
        };
        quarry_security::audit::set_target(&request, target);
        let request = request.into_inner();
        tracing::Span::current()
            .record("pack", request.name.as_str())
            .record("version", request.version);
        let versions = self.shared.read(|s| match request.version {
            0 => s.rule_packs.versions(&request.name),
            v => vec![v],
        })?;
        self.shared
            .propose_write(
                "",
                Command::DeleteRulePack {
                    name: request.name.clone(),
                    version: (request.version != 0).then_some(request.version),
                    force: request.force,
                },
            )
            .await?;
        tracing::info!(?versions, "rule pack deleted");
        Ok(tonic::Response::new(v1::DeleteRulePackResponse {
            versions,
        }))
    }
}

/// `WorkerService.FetchRulePack`: the files of the version a task is
/// bound to, or of any stored version with the same content.
pub fn fetch(
    api: &Api,
    request: v1::FetchRulePackRequest,
) -> Result<v1::FetchRulePackResponse, Status> {
    api.shared
        .read(|s| {
            let store = &s.rule_packs;
            store
                .get(&request.name, request.version)
                .filter(|r| r.digest == request.digest)
                .or_else(|| store.any_with_digest(&request.digest))
                .map(files_of)
        })?
        .map(|files| v1::FetchRulePackResponse { files })
        .ok_or_else(|| {
            // The worker names the pack and version around this.
            Status::not_found(format!(
                "no stored pack holds sha256 {}: it was deleted (`quarry sigma list` shows what is kept)",
                request.digest
            ))
        })
}

//! `quarry.v1.IntelService` (import, list, show, delete intel sets) and the
//! worker's `FetchIntel`. Files are parsed here, on the coordinator that
//! takes the import (so automation can send a feed as it comes), and the
//! parsed set is proposed; bad entries are answered with their positions.

use crate::intel_store::{IntelSetRecord, set_text};
use crate::service::{Api, caller_of};
use crate::state::Command;
use quarry_intel::{Format, Indicator};
use quarry_proto::v1;
use std::collections::BTreeMap;
use tonic::{Request, Status};

/// Problems an import answer lists (the count is always complete).
const MAX_PROBLEMS_SHOWN: usize = 1_000;
/// Indicators `GetIntel` returns unless asked for fewer.
const DEFAULT_SHOWN: usize = 100;

fn millis_or_zero(ms: Option<i64>) -> i64 {
    ms.unwrap_or(0)
}

fn indicator(i: &Indicator) -> v1::IntelIndicator {
    v1::IntelIndicator {
        kind: i.kind.as_str().to_owned(),
        value: i.value.clone(),
        valid_from_ms: millis_or_zero(i.valid_from_ms),
        valid_until_ms: millis_or_zero(i.valid_until_ms),
    }
}

/// A set's description, with its first `shown` indicators.
pub fn set_info(record: &IntelSetRecord, shown: usize) -> v1::IntelSetInfo {
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for i in &record.indicators {
        *kinds.entry(i.kind.as_str().to_owned()).or_default() += 1;
    }
    v1::IntelSetInfo {
        name: record.name.clone(),
        version: record.version,
        format: record.format.clone(),
        source: record.source.clone(),
        imported_by: record.imported_by.clone(),
        imported_ms: record.imported_ms,
        indicators: record.indicators.len() as u64,
        problems: record.problems,
        skipped: record.skipped,
        kinds: kinds.into_iter().collect(),
        sample: record
            .indicators
            .iter()
            .take(shown)
            .map(indicator)
            .collect(),
    }
}

/// Parses an import in `format` (`stix`, `misp`, `csv:COLUMN`, `lines`).
fn parse(format: &str, data: &[u8], now_ms: i64) -> Result<quarry_intel::Import, Status> {
    let format: Format = format
        .parse()
        .map_err(|e: quarry_intel::IntelError| Status::invalid_argument(e.to_string()))?;
    quarry_intel::import(&format, data, now_ms).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl v1::intel_service_server::IntelService for Api {
    #[tracing::instrument(skip_all, fields(set, format))]
    async fn import_intel(
        &self,
        request: Request<v1::ImportIntelRequest>,
    ) -> Result<tonic::Response<v1::ImportIntelResponse>, Status> {
        let (imported_by, _) = caller_of(&request);
        quarry_security::audit::set_target(
            &request,
            format!("intel set {}", request.get_ref().name),
        );
        let request = request.into_inner();
        tracing::Span::current()
            .record("set", request.name.as_str())
            .record("format", request.format.as_str());
        quarry_contract::intel::IntelSets::new()
            .add(&request.name, "")
            .map_err(Status::invalid_argument)?;
        let now_ms = self.shared.clock.now_ms();
        let data = request.data;
        let format = request.format.clone();
        // A large feed takes a while to parse: off the runtime.
        let import = tokio::task::spawn_blocking(move || parse(&format, &data, now_ms))
            .await
            .map_err(|e| Status::internal(format!("intel parsing task failed: {e}")))??;
        if import.indicators.is_empty() {
            let why = import
                .problems
                .first()
                .map_or_else(String::new, |p| format!("; first problem: {p}"));
            return Err(Status::invalid_argument(format!(
                "intel set {} would hold no indicators ({} entries unusable, {} skipped){why}",
                request.name,
                import.problems.len(),
                import.skipped
            )));
        }
        let record = IntelSetRecord {
            name: request.name.clone(),
            version: 0,
            format: if request.format.is_empty() {
                "lines".to_owned()
            } else {
                request.format
            },
            source: request.source,
            imported_by,
            imported_ms: now_ms,
            indicators: import.indicators,
            problems: u32::try_from(import.problems.len()).unwrap_or(u32::MAX),
            skipped: u32::try_from(import.skipped).unwrap_or(u32::MAX),
        };
        self.shared
            .propose_write(&request.request_id, Command::ImportIntel { record })
            .await?;
        let set = self
            .shared
            .read(|s| s.intel.latest(&request.name).map(|r| set_info(r, 0)))?
            .ok_or_else(|| Status::internal("the imported set vanished"))?;
        tracing::info!(
            version = set.version,
            indicators = set.indicators,
            "intel set imported"
        );
        Ok(tonic::Response::new(v1::ImportIntelResponse {
            set: Some(set),
            problems: import
                .problems
                .into_iter()
                .take(MAX_PROBLEMS_SHOWN)
                .map(|p| v1::IntelProblem {
                    position: p.position,
                    message: p.message,
                })
                .collect(),
        }))
    }

    async fn list_intel(
        &self,
        _request: Request<v1::ListIntelRequest>,
    ) -> Result<tonic::Response<v1::ListIntelResponse>, Status> {
        self.shared.node.read_index().await?;
        let sets = self.shared.read(|s| {
            s.intel
                .sets
                .values()
                .filter_map(|versions| versions.values().next_back())
                .map(|r| set_info(r, 0))
                .collect()
        })?;
        Ok(tonic::Response::new(v1::ListIntelResponse { sets }))
    }

    async fn get_intel(
        &self,
        request: Request<v1::GetIntelRequest>,
    ) -> Result<tonic::Response<v1::IntelSetInfo>, Status> {
        self.shared.node.read_index().await?;
        let request = request.into_inner();
        let shown = match request.limit {
            0 => DEFAULT_SHOWN,
            n => n as usize,
        };
        let info = self.shared.read(|s| {
            let record = match request.version {
                0 => s.intel.latest(&request.name),
                v => s.intel.get(&request.name, v),
            };
            record.map(|r| set_info(r, shown))
        })?;
        info.map(tonic::Response::new).ok_or_else(|| {
            Status::not_found(format!(
                "no intel set {}{}; `quarry intel list` shows the sets",
                request.name,
                if request.version == 0 {
                    String::new()
                } else {
                    format!(" version {}", request.version)
                }
            ))
        })
    }

    async fn delete_intel(
        &self,
        request: Request<v1::DeleteIntelRequest>,
    ) -> Result<tonic::Response<v1::DeleteIntelResponse>, Status> {
        quarry_security::audit::set_target(
            &request,
            format!("intel set {}", request.get_ref().name),
        );
        let name = request.into_inner().name;
        let versions = self
            .shared
            .read(|s| {
                s.intel
                    .sets
                    .get(&name)
                    .map(|v| v.keys().copied().collect::<Vec<_>>())
            })?
            .unwrap_or_default();
        self.shared
            .propose_write("", Command::DeleteIntel { name })
            .await?;
        Ok(tonic::Response::new(v1::DeleteIntelResponse { versions }))
    }
}

/// `WorkerService.FetchIntel`: one version of a set, as the text of its
/// indicators valid now.
pub fn fetch(api: &Api, request: v1::FetchIntelRequest) -> Result<v1::FetchIntelResponse, Status> {
    let now_ms = api.shared.clock.now_ms();
    api.shared
        .read(|s| {
            s.intel
                .get(&request.name, request.version)
                .map(|r| set_text(r, now_ms))
        })?
        .map(|text| v1::FetchIntelResponse { text })
        .ok_or_else(|| {
            Status::not_found(format!(
                "intel set {} version {} is not stored (deleted, or a newer import let it go)",
                request.name, request.version
            ))
        })
}

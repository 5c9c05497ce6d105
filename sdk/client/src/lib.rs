//! `quarry-client`: a Rust client for the Quarry gRPC API (`quarry.v1`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), quarry_client::ClientError> {
//! let mut client = quarry_client::Client::connect("http://127.0.0.1:7700").await?;
//! let hunt = client
//!     .submit_hunt(quarry_client::HuntRequest::new("bruteforce").selector("env", "demo"))
//!     .await?;
//! let done = client.wait(&hunt.hunt_id, |_progress| {}).await?;
//! for finding in client.findings(&done.hunt_id).await? {
//!     println!("{} {}", finding.entity, finding.title);
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use quarry_proto::v1::{
    self, cluster_service_client::ClusterServiceClient, hunt_service_client::HuntServiceClient,
    module_service_client::ModuleServiceClient, triage_service_client::TriageServiceClient,
};
pub use quarry_security::TlsFiles;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio_stream::StreamExt as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Default coordinator address of `quarry dev`.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7700";

/// What can go wrong talking to a coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not usable.
    #[error("invalid coordinator URL `{url}`: {detail}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// Nothing answered.
    #[error(
        "cannot reach the coordinator at {url}: {detail} (is `quarry dev` or `quarry coordinator` running there?)"
    )]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// The coordinator answered with an error. The status is not the
    /// error's `source`: its message is already the whole story.
    #[error("{}: {}", code_text(.0.code()), .0.message())]
    Status(tonic::Status),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

fn code_text(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::InvalidArgument => "invalid request",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => "not allowed",
        _ => "error",
    }
}

impl ClientError {
    /// The gRPC code, when the coordinator answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}

/// A hunt to submit, built step by step.
#[derive(Clone, Debug, Default)]
pub struct HuntRequest {
    inner: v1::SubmitHuntRequest,
}

impl From<v1::SubmitHuntRequest> for HuntRequest {
    /// A request as the API spells it (an imported hunt, say).
    fn from(inner: v1::SubmitHuntRequest) -> Self {
        Self { inner }
    }
}

impl HuntRequest {
    /// A hunt running `module` (`name`, `name@version` or `sha256:<hex>`).
    pub fn new(module: &str) -> Self {
        let reference = if let Some(hex) = module.strip_prefix("sha256:") {
            v1::module_ref::Ref::Digest(hex.to_owned())
        } else {
            v1::module_ref::Ref::NameVersion(module.to_owned())
        };
        Self {
            inner: v1::SubmitHuntRequest {
                module: Some(v1::ModuleRef {
                    r#ref: Some(reference),
                }),
                scope: Some(v1::HuntScope::default()),
                ..Default::default()
            },
        }
    }

    /// Looks values up in the stored intel set `name` (its latest version
    /// when the hunt is submitted).
    pub fn intel_set(mut self, name: &str) -> Self {
        self.inner.intel_sets.push(name.to_owned());
        self
    }

    /// Takes Sigma rules from the stored rule pack `pack` (`NAME`, its
    /// latest version now; `NAME@VERSION`; `NAME@sha256:DIGEST`; in a
    /// schedule's template `NAME@latest` follows the pack). The hunt is
    /// bound to one version by digest, not sent the rules.
    pub fn rule_pack(mut self, pack: &str) -> Self {
        self.inner.rule_packs.push(pack.to_owned());
        self
    }

    fn scope(&mut self) -> &mut v1::HuntScope {
        self.inner.scope.get_or_insert_with(Default::default)
    }

    /// Only shards with this label.
    pub fn selector(mut self, key: &str, value: &str) -> Self {
        self.scope()
            .selector
            .get_or_insert_with(Default::default)
            .match_labels
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Also this shard.
    pub fn shard(mut self, name: &str) -> Self {
        self.scope().shards.push(name.to_owned());
        self
    }

    /// Only events in `[start_ms, end_ms)` (0 = open).
    pub fn time_range(mut self, start_ms: i64, end_ms: i64) -> Self {
        self.scope().time_range = Some(v1::TimeRange { start_ms, end_ms });
        self
    }

    /// A module parameter.
    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.inner.params.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Per-task limits (0 = default).
    pub fn limits(mut self, cpu_ms: u64, memory_bytes: u64, max_findings_per_task: u32) -> Self {
        let limits = self.inner.limits.get_or_insert_with(Default::default);
        limits.cpu_ms = cpu_ms;
        limits.memory_bytes = memory_bytes;
        limits.max_findings_per_task = max_findings_per_task;
        self
    }

    /// Output bytes per task (0 = the worker's maximum).
    pub fn max_output_bytes(mut self, bytes: u64) -> Self {
        self.inner
            .limits
            .get_or_insert_with(Default::default)
            .max_output_bytes = bytes;
        self
    }

    /// Result limits for the whole hunt (0 = default): findings and bytes.
    pub fn hunt_result_limits(mut self, findings: u64, bytes: u64) -> Self {
        let limits = self.inner.limits.get_or_insert_with(Default::default);
        limits.max_findings_per_hunt = findings;
        limits.max_result_bytes_per_hunt = bytes;
        self
    }

    fn policy(&mut self) -> &mut v1::HuntPolicy {
        self.inner.policy.get_or_insert_with(Default::default)
    }

    /// Attempts per task before its shard is reported failed (0 = default),
    /// and the wait before the first retry in ms (0 = default).
    pub fn retries(mut self, max_attempts: u32, backoff_ms: u64) -> Self {
        let policy = self.policy();
        policy.max_attempts = max_attempts;
        policy.retry_backoff_ms = backoff_ms;
        self
    }

    /// Time from submission after which unfinished shards are given up.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy().deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Run this many shards first; widen once they succeed.
    pub fn canary_shards(mut self, shards: u32) -> Self {
        self.policy().canary_shards = shards;
        self
    }

    /// Run this percentage of the shards first; widen once they succeed.
    pub fn canary_percent(mut self, percent: u32) -> Self {
        self.policy().canary_percent = percent;
        self
    }

    /// Module failures that pause the hunt (0 = default).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.policy().failure_threshold = failures;
        self
    }

    /// Tasks of this hunt running at once (0 = no cap).
    pub fn max_concurrency(mut self, tasks: u32) -> Self {
        self.policy().max_concurrency = tasks;
        self
    }

    /// Task starts per second for this hunt (0 = no cap).
    pub fn max_tasks_per_second(mut self, tasks: u32) -> Self {
        self.policy().max_tasks_per_second = tasks;
        self
    }

    /// Priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.inner.priority = priority;
        self
    }

    /// Validate and preview only (shards, events, estimate); store nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.inner.dry_run = dry_run;
        self
    }

    /// Free-text description.
    pub fn description(mut self, text: &str) -> Self {
        self.inner.description = text.to_owned();
        self
    }

    /// The protobuf request.
    pub fn into_proto(self) -> v1::SubmitHuntRequest {
        self.inner
    }

    /// Names this submission for deduplication; by default
    /// [`Client::submit_hunt`] picks a fresh random id, which its own
    /// retries reuse. Give your own to make retries across processes safe
    /// (for example a scheduler's run id).
    pub fn request_id(mut self, id: &str) -> Self {
        self.inner.request_id = id.to_owned();
        self
    }
}

/// Every item of a paged list: `fetch` gets a page token (empty for the
/// first page) and answers the page's items and the next token (empty after
/// the last page).
async fn all_pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, ClientError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), ClientError>>,
{
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = fetch(token).await?;
        out.extend(items);
        if next.is_empty() {
            return Ok(out);
        }
        token = next;
    }
}

/// A fresh id for one logical write: 128 bits from the standard library's
/// randomly keyed hashers over the time, the process and a counter, in hex.
/// Retries of the write reuse it, so the coordinator applies it once.
pub fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = || {
        let mut hasher = std::hash::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(count);
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// A connection to a coordinator.
#[derive(Clone)]
pub struct Client {
    hunts: HuntServiceClient<Svc>,
    modules: ModuleServiceClient<Svc>,
    cluster: ClusterServiceClient<Svc>,
    triage: TriageServiceClient<Svc>,
    tokens: v1::token_service_client::TokenServiceClient<Svc>,
    intel: v1::intel_service_client::IntelServiceClient<Svc>,
    rule_packs: v1::rule_pack_service_client::RulePackServiceClient<Svc>,
    audit: v1::audit_service_client::AuditServiceClient<Svc>,
    schedules: v1::schedule_service_client::ScheduleServiceClient<Svc>,
    /// Kept for following the leader to another coordinator.
    credentials: Credentials,
}

/// What a client presents to a cluster: nothing (a plaintext development
/// cluster on loopback), the cluster's CA and its own certificate (mutual
/// TLS), or the CA and a bearer token.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// The CA that signs the cluster's certificates; makes the connection TLS.
    pub ca: Option<PathBuf>,
    /// This caller's certificate and private key.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// A bearer token from `quarry token create`.
    pub token: Option<String>,
}

impl From<Option<&TlsFiles>> for Credentials {
    fn from(tls: Option<&TlsFiles>) -> Self {
        Self {
            ca: tls.map(|files| files.ca.clone()),
            identity: tls.map(|files| (files.cert.clone(), files.key.clone())),
            token: None,
        }
    }
}

/// Sends the bearer token, if any, with every request, and the caller's
/// trace context (`traceparent`) when traces are exported.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        quarry_telemetry::inject(request.metadata_mut());
        Ok(request)
    }
}

/// A channel with the caller's bearer token.
type Svc = InterceptedService<Channel, Bearer>;

/// A connected channel to `url` with `credentials`.
async fn channel(url: &str, credentials: &Credentials) -> Result<Svc, ClientError> {
    let endpoint = quarry_security::tls::client_endpoint(
        url,
        credentials.ca.as_deref(),
        credentials
            .identity
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path())),
    )
    .map_err(|e| ClientError::BadUrl {
        url: url.to_owned(),
        detail: e.to_string(),
    })?;
    let bearer = match &credentials.token {
        None => None,
        Some(token) => {
            Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| ClientError::BadUrl {
                        url: url.to_owned(),
                        detail: "the token has characters a header cannot carry".into(),
                    })?,
            )
        }
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| ClientError::Connect {
            url: url.to_owned(),
            detail: source_text(&e),
        })?;
    Ok(InterceptedService::new(channel, Bearer(bearer)))
}

impl Client {
    /// Connects to `url` over plaintext (for example
    /// `http://127.0.0.1:7700`, a development cluster on loopback).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, None).await
    }

    /// Connects to `url`; with `tls`, over mutual TLS (`https://` URLs),
    /// presenting the certificate that names the caller.
    pub async fn connect_with(url: &str, tls: Option<&TlsFiles>) -> Result<Self, ClientError> {
        Self::connect_as(url, &Credentials::from(tls)).await
    }

    /// Connects to `url` presenting `credentials` (a certificate, a bearer
    /// token, or nothing on a plaintext development cluster).
    pub async fn connect_as(url: &str, credentials: &Credentials) -> Result<Self, ClientError> {
        let channel = channel(url, credentials).await?;
        let max = quarry_proto::MAX_MESSAGE_BYTES;
        Ok(Self {
            hunts: HuntServiceClient::new(channel.clone()).max_decoding_message_size(max),
            modules: ModuleServiceClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            cluster: ClusterServiceClient::new(channel.clone()),
            triage: TriageServiceClient::new(channel.clone()).max_decoding_message_size(max),
            tokens: v1::token_service_client::TokenServiceClient::new(channel.clone()),
            intel: v1::intel_service_client::IntelServiceClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            rule_packs: v1::rule_pack_service_client::RulePackServiceClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            audit: v1::audit_service_client::AuditServiceClient::new(channel.clone())
                .max_decoding_message_size(max),
            schedules: v1::schedule_service_client::ScheduleServiceClient::new(channel)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            credentials: credentials.clone(),
        })
    }

    /// Creates a bearer token (admins); the answer holds the token itself,
    /// which is never shown again. `expires_in` zero: never expires.
    pub async fn create_token(
        &mut self,
        name: &str,
        role: &str,
        expires_in: Duration,
    ) -> Result<v1::CreateTokenResponse, ClientError> {
        let request = v1::CreateTokenRequest {
            name: name.to_owned(),
            role: role.to_owned(),
            expires_in_seconds: expires_in.as_secs(),
        };
        let mut hops = 0;
        loop {
            match self.tokens.create_token(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Every bearer token, revoked ones included (admins).
    pub async fn list_tokens(&mut self) -> Result<Vec<v1::TokenInfo>, ClientError> {
        Ok(self
            .tokens
            .list_tokens(v1::ListTokensRequest {})
            .await?
            .into_inner()
            .tokens)
    }

    /// Adds a module-signing key to the cluster's trusted set (admins).
    pub async fn trust_key(
        &mut self,
        name: &str,
        public_key_hex: &str,
    ) -> Result<v1::TrustedKeysResponse, ClientError> {
        let request = v1::TrustKeyRequest {
            name: name.to_owned(),
            public_key: public_key_hex.to_owned(),
        };
        let mut hops = 0;
        loop {
            match self.cluster.trust_key(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Removes a trusted module-signing key (admins).
    pub async fn untrust_key(
        &mut self,
        name: &str,
    ) -> Result<v1::TrustedKeysResponse, ClientError> {
        let request = v1::UntrustKeyRequest {
            name: name.to_owned(),
        };
        let mut hops = 0;
        loop {
            match self.cluster.untrust_key(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// The trusted module-signing keys and whether signatures are required.
    pub async fn trusted_keys(&mut self) -> Result<v1::TrustedKeysResponse, ClientError> {
        Ok(self
            .cluster
            .list_trusted_keys(v1::ListTrustedKeysRequest {})
            .await?
            .into_inner())
    }

    /// Requires (or stops requiring) signed modules (admins).
    pub async fn set_module_policy(
        &mut self,
        require_signed: bool,
    ) -> Result<v1::TrustedKeysResponse, ClientError> {
        let request = v1::SetModulePolicyRequest { require_signed };
        let mut hops = 0;
        loop {
            match self.cluster.set_module_policy(request).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Imports an intel set (a new version if the name exists): `format`
    /// is `stix`, `misp`, `csv:COLUMN` or `lines`. The answer lists the
    /// entries that could not be used, with their positions.
    pub async fn import_intel(
        &mut self,
        name: &str,
        format: &str,
        data: Vec<u8>,
        source: &str,
    ) -> Result<v1::ImportIntelResponse, ClientError> {
        let request = v1::ImportIntelRequest {
            name: name.to_owned(),
            format: format.to_owned(),
            data,
            source: source.to_owned(),
            request_id: new_request_id(),
        };
        let mut hops = 0;
        loop {
            match self.intel.import_intel(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Imports Sigma rule files (relative path -> YAML text) as the next
    /// version of rule pack `name`; content equal to the latest version's
    /// keeps that version (`unchanged`).
    pub async fn import_rule_pack(
        &mut self,
        name: &str,
        files: Vec<v1::RuleFile>,
        source: &str,
    ) -> Result<v1::ImportRulePackResponse, ClientError> {
        let request = v1::ImportRulePackRequest {
            name: name.to_owned(),
            files,
            source: source.to_owned(),
            request_id: new_request_id(),
        };
        let mut hops = 0;
        loop {
            match self.rule_packs.import_rule_pack(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// The latest version of every rule pack.
    pub async fn list_rule_packs(&mut self) -> Result<Vec<v1::RulePackInfo>, ClientError> {
        Ok(self
            .rule_packs
            .list_rule_packs(v1::ListRulePacksRequest {})
            .await?
            .into_inner()
            .packs)
    }

    /// One version of a rule pack (0: the latest), with its files if
    /// `with_rules`.
    pub async fn get_rule_pack(
        &mut self,
        name: &str,
        version: u32,
        with_rules: bool,
    ) -> Result<v1::GetRulePackResponse, ClientError> {
        Ok(self
            .rule_packs
            .get_rule_pack(v1::GetRulePackRequest {
                name: name.to_owned(),
                version,
                with_rules,
            })
            .await?
            .into_inner())
    }

    /// Deletes one version of a rule pack (0: every version); refused
    /// while hunts or schedules use it unless `force`. Returns the
    /// versions deleted.
    pub async fn delete_rule_pack(
        &mut self,
        name: &str,
        version: u32,
        force: bool,
    ) -> Result<Vec<u32>, ClientError> {
        let request = v1::DeleteRulePackRequest {
            name: name.to_owned(),
            version,
            force,
        };
        let mut hops = 0;
        loop {
            match self.rule_packs.delete_rule_pack(request.clone()).await {
                Ok(response) => return Ok(response.into_inner().versions),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Creates a recurring hunt (docs/schedules.md): `template` is the hunt
    /// each run submits; `trigger` a cron expression or an interval.
    pub async fn create_schedule(
        &mut self,
        mut request: v1::CreateScheduleRequest,
    ) -> Result<v1::Schedule, ClientError> {
        if request.request_id.is_empty() {
            request.request_id = new_request_id();
        }
        let mut hops = 0;
        loop {
            match self.schedules.create_schedule(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Every schedule of the cluster.
    pub async fn list_schedules(&mut self) -> Result<Vec<v1::Schedule>, ClientError> {
        Ok(self
            .schedules
            .list_schedules(v1::ListSchedulesRequest {})
            .await?
            .into_inner()
            .schedules)
    }

    /// One schedule.
    pub async fn schedule(&mut self, name: &str) -> Result<v1::Schedule, ClientError> {
        Ok(self
            .schedules
            .get_schedule(v1::GetScheduleRequest {
                name: name.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Pauses (`true`) or resumes a schedule.
    pub async fn set_schedule_paused(
        &mut self,
        name: &str,
        paused: bool,
    ) -> Result<v1::Schedule, ClientError> {
        let request = v1::SetSchedulePausedRequest {
            name: name.to_owned(),
            paused,
        };
        let mut hops = 0;
        loop {
            match self.schedules.set_schedule_paused(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Deletes a schedule (a run going on finishes as a plain hunt).
    pub async fn delete_schedule(&mut self, name: &str) -> Result<(), ClientError> {
        let request = v1::DeleteScheduleRequest {
            name: name.to_owned(),
        };
        let mut hops = 0;
        loop {
            match self.schedules.delete_schedule(request.clone()).await {
                Ok(_) => return Ok(()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// A schedule's runs, newest first (`limit` 0: all kept).
    pub async fn schedule_runs(
        &mut self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<v1::ScheduleRun>, ClientError> {
        Ok(self
            .schedules
            .list_runs(v1::ListScheduleRunsRequest {
                name: name.to_owned(),
                limit,
            })
            .await?
            .into_inner()
            .runs)
    }

    /// The latest version of every stored intel set.
    pub async fn list_intel(&mut self) -> Result<Vec<v1::IntelSetInfo>, ClientError> {
        Ok(self
            .intel
            .list_intel(v1::ListIntelRequest {})
            .await?
            .into_inner()
            .sets)
    }

    /// One version of a set (0: the latest) with its first `limit` indicators.
    pub async fn get_intel(
        &mut self,
        name: &str,
        version: u32,
        limit: u32,
    ) -> Result<v1::IntelSetInfo, ClientError> {
        Ok(self
            .intel
            .get_intel(v1::GetIntelRequest {
                name: name.to_owned(),
                version,
                limit,
            })
            .await?
            .into_inner())
    }

    /// Deletes every version of a set; returns the versions deleted.
    pub async fn delete_intel(&mut self, name: &str) -> Result<Vec<u32>, ClientError> {
        let request = v1::DeleteIntelRequest {
            name: name.to_owned(),
        };
        let mut hops = 0;
        loop {
            match self.intel.delete_intel(request.clone()).await {
                Ok(response) => return Ok(response.into_inner().versions),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// One page of the audit trail, oldest first (admins); page on with
    /// `after_seq` set to the last record's `seq` while `more` is set.
    pub async fn list_audit(
        &mut self,
        request: v1::ListAuditRequest,
    ) -> Result<v1::ListAuditResponse, ClientError> {
        Ok(self.audit.list_audit(request).await?.into_inner())
    }

    /// Revokes a bearer token (admins).
    pub async fn revoke_token(&mut self, id: &str) -> Result<v1::TokenInfo, ClientError> {
        let request = v1::RevokeTokenRequest { id: id.to_owned() };
        let mut hops = 0;
        loop {
            match self.tokens.revoke_token(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Uploads a module in chunks; returns what the coordinator stored.
    pub async fn upload_module(
        &mut self,
        name: &str,
        version: &str,
        description: &str,
        bytes: &[u8],
    ) -> Result<v1::ModuleInfo, ClientError> {
        self.upload_signed_module(name, version, description, bytes, None, &[])
            .await
    }

    /// [`Client::upload_module`] with an ed25519 signature of the module
    /// (`quarry module sign`), which the cluster checks against its trusted
    /// keys, and the ATT&CK techniques its descriptor declares (for
    /// `quarry coverage`; empty if unknown).
    pub async fn upload_signed_module(
        &mut self,
        name: &str,
        version: &str,
        description: &str,
        bytes: &[u8],
        signature: Option<&[u8]>,
        techniques: &[String],
    ) -> Result<v1::ModuleInfo, ClientError> {
        let header = v1::ModuleUploadHeader {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            expected_digest: hex::encode(Sha256::digest(bytes)),
            signature: signature.map(<[u8]>::to_vec).unwrap_or_default(),
            techniques: techniques.to_vec(),
        };
        let mut chunks: Vec<v1::UploadModuleRequest> = bytes
            .chunks(quarry_proto::MODULE_CHUNK_BYTES)
            .map(|c| v1::UploadModuleRequest {
                header: None,
                data: c.to_vec(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(v1::UploadModuleRequest::default());
        }
        chunks[0].header = Some(header);
        let mut hops = 0;
        loop {
            match self
                .modules
                .upload_module(tokio_stream::iter(chunks.clone()))
                .await
            {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Writes go to the raft leader: a follower answers `UNAVAILABLE` with
    /// the leader's URL, and the client reconnects there (at most twice per
    /// call). Any other error is returned as is.
    async fn follow_leader(
        &mut self,
        status: tonic::Status,
        hops: &mut u32,
    ) -> Result<(), ClientError> {
        let leader = status
            .metadata()
            .get(quarry_proto::LEADER_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match leader {
            Some(url) if status.code() == tonic::Code::Unavailable && *hops < 2 => {
                *hops += 1;
                *self = Client::connect_as(&url, &self.credentials.clone()).await?;
                Ok(())
            }
            _ => Err(status.into()),
        }
    }

    /// Lists uploaded modules.
    pub async fn list_modules(&mut self) -> Result<Vec<v1::ModuleInfo>, ClientError> {
        let modules = self.modules.clone();
        all_pages(|page_token| {
            let mut modules = modules.clone();
            async move {
                let request = v1::ListModulesRequest {
                    page_size: 0,
                    page_token,
                };
                let page = modules.list_modules(request).await?.into_inner();
                Ok((page.modules, page.next_page_token))
            }
        })
        .await
    }

    /// Submits a hunt.
    pub async fn submit_hunt(
        &mut self,
        request: HuntRequest,
    ) -> Result<v1::SubmitHuntResponse, ClientError> {
        let mut request = request.into_proto();
        if request.request_id.is_empty() && !request.dry_run {
            request.request_id = new_request_id();
        }
        let mut hops = 0;
        loop {
            match self.hunts.submit_hunt(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// A hunt with every one of its tasks, fetched a page at a time.
    pub async fn hunt(&mut self, hunt_id: &str) -> Result<v1::Hunt, ClientError> {
        self.hunt_tasks(hunt_id, 0, &[]).await
    }

    /// A hunt with at most `max_tasks` of its tasks (0: all) in the given
    /// states (empty: all), fetched a page at a time; `task_counts` and
    /// `next_task_page_token` tell what was left out.
    pub async fn hunt_tasks(
        &mut self,
        hunt_id: &str,
        max_tasks: u32,
        states: &[v1::TaskState],
    ) -> Result<v1::Hunt, ClientError> {
        let mut request = v1::GetHuntRequest {
            hunt_id: hunt_id.to_owned(),
            task_page_size: if max_tasks == 0 {
                1000
            } else {
                max_tasks.min(1000)
            },
            task_page_token: String::new(),
            task_states: states.iter().map(|s| *s as i32).collect(),
        };
        let mut hunt = self.hunt_page(request.clone()).await?;
        while !hunt.next_task_page_token.is_empty()
            && (max_tasks == 0 || (hunt.tasks.len() as u32) < max_tasks)
        {
            request.task_page_token = std::mem::take(&mut hunt.next_task_page_token);
            if max_tasks > 0 {
                request.task_page_size = (max_tasks - hunt.tasks.len() as u32).min(1000);
            }
            let next = self.hunt_page(request.clone()).await?;
            hunt.tasks.extend(next.tasks);
            hunt.next_task_page_token = next.next_task_page_token;
        }
        Ok(hunt)
    }

    /// One GetHunt call: the hunt and one page of its tasks.
    pub async fn hunt_page(
        &mut self,
        request: v1::GetHuntRequest,
    ) -> Result<v1::Hunt, ClientError> {
        Ok(self.hunts.get_hunt(request).await?.into_inner())
    }

    /// Recent hunts, newest first: at most `limit` (0: all), fetched a page
    /// at a time.
    pub async fn list_hunts(&mut self, limit: u32) -> Result<Vec<v1::Hunt>, ClientError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let want = if limit == 0 {
                0
            } else {
                limit - out.len() as u32
            };
            let (page, next) = self.list_hunts_page(want, &token).await?;
            out.extend(page);
            if next.is_empty() || (limit != 0 && out.len() as u32 >= limit) {
                return Ok(out);
            }
            token = next;
        }
    }

    /// One page of hunts, newest first, after `page_token` (empty: the
    /// newest); returns the hunts and the token of the next page (empty on
    /// the last). `page_size` 0 lets the coordinator choose (100).
    pub async fn list_hunts_page(
        &mut self,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<v1::Hunt>, String), ClientError> {
        let response = self
            .hunts
            .list_hunts(v1::ListHuntsRequest {
                states: vec![],
                limit: page_size,
                page_token: page_token.to_owned(),
            })
            .await?
            .into_inner();
        Ok((response.hunts, response.next_page_token))
    }

    /// Cancels a hunt.
    pub async fn cancel_hunt(
        &mut self,
        hunt_id: &str,
        reason: &str,
    ) -> Result<v1::Hunt, ClientError> {
        let request = v1::CancelHuntRequest {
            hunt_id: hunt_id.to_owned(),
            reason: reason.to_owned(),
            request_id: new_request_id(),
        };
        let mut hops = 0;
        loop {
            match self.hunts.cancel_hunt(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Deletes a finished hunt with its tasks and findings.
    pub async fn delete_hunt(&mut self, hunt_id: &str) -> Result<(), ClientError> {
        let request = v1::DeleteHuntRequest {
            hunt_id: hunt_id.to_owned(),
            request_id: new_request_id(),
        };
        let mut hops = 0;
        loop {
            match self.hunts.delete_hunt(request.clone()).await {
                Ok(_) => return Ok(()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// One page of the triage queue, highest score first.
    pub async fn list_cases(
        &mut self,
        request: v1::ListCasesRequest,
    ) -> Result<v1::ListCasesResponse, ClientError> {
        Ok(self.triage.list_cases(request).await?.into_inner())
    }

    /// Every case the filter matches, a page at a time, at most `limit`
    /// (0: all): the cases, the filter's `total`, and the token to go on
    /// from when `limit` cut the list short.
    pub async fn all_cases(
        &mut self,
        mut request: v1::ListCasesRequest,
        limit: usize,
    ) -> Result<v1::ListCasesResponse, ClientError> {
        let mut all = self.list_cases(request.clone()).await?;
        while !all.next_page_token.is_empty() && (limit == 0 || all.cases.len() < limit) {
            request.page_token = std::mem::take(&mut all.next_page_token);
            let page = self.list_cases(request.clone()).await?;
            all.cases.extend(page.cases);
            all.next_page_token = page.next_page_token;
        }
        if limit > 0 {
            all.cases.truncate(limit);
        }
        Ok(all)
    }

    /// An alert or incident (an alert with its first findings).
    pub async fn case(&mut self, id: &str) -> Result<v1::TriageCase, ClientError> {
        Ok(self
            .triage
            .get_case(v1::GetCaseRequest { id: id.to_owned() })
            .await?
            .into_inner())
    }

    /// Assigns, comments, gives a verdict, closes or reopens a case; applied
    /// once however often it is retried.
    pub async fn update_case(
        &mut self,
        id: &str,
        actor: &str,
        action: v1::update_case_request::Action,
    ) -> Result<v1::TriageCase, ClientError> {
        let request = v1::UpdateCaseRequest {
            id: id.to_owned(),
            actor: actor.to_owned(),
            request_id: new_request_id(),
            action: Some(action),
        };
        let mut hops = 0;
        loop {
            match self.triage.update_case(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Applies (or with `dry_run`, previews) a triage config.
    pub async fn apply_triage_config(
        &mut self,
        mut request: v1::ApplyTriageConfigRequest,
    ) -> Result<v1::ApplyTriageConfigResponse, ClientError> {
        if request.request_id.is_empty() && !request.dry_run {
            request.request_id = new_request_id();
        }
        let mut hops = 0;
        loop {
            match self.triage.apply_config(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// The triage config in force and its history.
    pub async fn triage_config(&mut self) -> Result<v1::TriageConfigInfo, ClientError> {
        Ok(self
            .triage
            .get_config(v1::GetTriageConfigRequest {})
            .await?
            .into_inner())
    }

    /// Suppression proposals (pending only unless `all`).
    pub async fn proposals(&mut self, all: bool) -> Result<Vec<v1::Proposal>, ClientError> {
        Ok(self
            .triage
            .list_proposals(v1::ListProposalsRequest { all })
            .await?
            .into_inner()
            .proposals)
    }

    /// Accepts or rejects a suppression proposal.
    pub async fn decide_proposal(
        &mut self,
        id: &str,
        accept: bool,
        actor: &str,
    ) -> Result<v1::DecideProposalResponse, ClientError> {
        let request = v1::DecideProposalRequest {
            id: id.to_owned(),
            accept,
            actor: actor.to_owned(),
            request_id: new_request_id(),
        };
        let mut hops = 0;
        loop {
            match self.triage.decide_proposal(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Queue counts and verdict statistics.
    pub async fn triage_summary(&mut self) -> Result<v1::TriageSummaryResponse, ClientError> {
        Ok(self
            .triage
            .summary(v1::TriageSummaryRequest {})
            .await?
            .into_inner())
    }

    /// Deletes a module no hunt refers to: `name@version` or `sha256:<hex>`.
    pub async fn delete_module(&mut self, module: &str) -> Result<v1::ModuleInfo, ClientError> {
        let reference = if let Some(hex) = module.strip_prefix("sha256:") {
            v1::module_ref::Ref::Digest(hex.to_owned())
        } else {
            v1::module_ref::Ref::NameVersion(module.to_owned())
        };
        let request = v1::DeleteModuleRequest {
            module: Some(v1::ModuleRef {
                r#ref: Some(reference),
            }),
        };
        let mut hops = 0;
        loop {
            match self.modules.delete_module(request.clone()).await {
                Ok(response) => {
                    return response.into_inner().module.ok_or_else(|| {
                        ClientError::from(tonic::Status::internal(
                            "the coordinator named no module",
                        ))
                    });
                }
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Resumes a paused hunt.
    pub async fn resume_hunt(&mut self, hunt_id: &str) -> Result<v1::Hunt, ClientError> {
        let request = v1::ResumeHuntRequest {
            hunt_id: hunt_id.to_owned(),
            request_id: new_request_id(),
        };
        let mut hops = 0;
        loop {
            match self.hunts.resume_hunt(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Follows a hunt's progress until it ends; returns the final hunt.
    pub async fn wait(
        &mut self,
        hunt_id: &str,
        mut on_progress: impl FnMut(&v1::HuntProgress),
    ) -> Result<v1::Hunt, ClientError> {
        let mut stream = self
            .hunts
            .watch_hunt(v1::WatchHuntRequest {
                hunt_id: hunt_id.to_owned(),
            })
            .await?
            .into_inner();
        while let Some(progress) = stream.next().await {
            on_progress(&progress?);
        }
        self.hunt(hunt_id).await
    }

    /// The result table of a `query` hunt (`quarry query`), as merged so far.
    pub async fn query_result(
        &mut self,
        hunt_id: &str,
    ) -> Result<v1::QueryResultResponse, ClientError> {
        let request = v1::QueryResultRequest {
            hunt_id: hunt_id.to_owned(),
        };
        Ok(self.hunts.query_result(request).await?.into_inner())
    }

    /// All findings committed for a hunt so far.
    pub async fn findings(&mut self, hunt_id: &str) -> Result<Vec<v1::Finding>, ClientError> {
        let request = v1::StreamFindingsRequest {
            hunt_id: hunt_id.to_owned(),
            follow: false,
            ..Default::default()
        };
        let mut stream = self.hunts.stream_findings(request).await?.into_inner();
        let mut out = Vec::new();
        while let Some(finding) = stream.next().await {
            out.push(finding?);
        }
        Ok(out)
    }

    /// Workers known to the cluster.
    pub async fn workers(&mut self) -> Result<Vec<v1::WorkerInfo>, ClientError> {
        let cluster = self.cluster.clone();
        all_pages(|page_token| {
            let mut cluster = cluster.clone();
            async move {
                let request = v1::ListWorkersRequest {
                    page_size: 0,
                    page_token,
                };
                let page = cluster.list_workers(request).await?.into_inner();
                Ok((page.workers, page.next_page_token))
            }
        })
        .await
    }

    /// Shards, optionally filtered by labels.
    pub async fn shards(
        &mut self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<v1::ShardInfo>, ClientError> {
        let cluster = self.cluster.clone();
        all_pages(|page_token| {
            let mut cluster = cluster.clone();
            let request = v1::ListShardsRequest {
                selector: Some(v1::LabelSelector {
                    match_labels: labels.clone(),
                }),
                page_size: 0,
                page_token,
            };
            async move {
                let page = cluster.list_shards(request).await?.into_inner();
                Ok((page.shards, page.next_page_token))
            }
        })
        .await
    }

    /// Adds coordinator `node_id`, reachable at `url`, to the raft group (a
    /// conf change on the leader); returns the new membership.
    pub async fn add_coordinator(
        &mut self,
        node_id: u64,
        url: &str,
    ) -> Result<Vec<v1::CoordinatorInfo>, ClientError> {
        let request = v1::AddCoordinatorRequest {
            node_id,
            url: url.to_owned(),
        };
        let mut hops = 0;
        loop {
            match self.cluster.add_coordinator(request.clone()).await {
                Ok(response) => return Ok(response.into_inner().coordinators),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Removes coordinator `node_id` from the raft group; returns the new
    /// membership. Removing the leader moves leadership first.
    pub async fn remove_coordinator(
        &mut self,
        node_id: u64,
    ) -> Result<Vec<v1::CoordinatorInfo>, ClientError> {
        let request = v1::RemoveCoordinatorRequest { node_id };
        let mut hops = 0;
        loop {
            match self.cluster.remove_coordinator(request).await {
                Ok(response) => return Ok(response.into_inner().coordinators),
                Err(status) => self.follow_leader(status, &mut hops).await?,
            }
        }
    }

    /// Cluster status from the node answering.
    pub async fn status(&mut self) -> Result<v1::StatusResponse, ClientError> {
        Ok(self
            .cluster
            .status(v1::StatusRequest {})
            .await?
            .into_inner())
    }
}

/// Streams one log file into a shard of the worker at `worker_url`
/// (`quarry.v1.IngestService`); answers once every event is on disk.
///
/// `format` is `jsonl`, `evtx`, `syslog`, `zeek-json`, `zeek-tsv` or `auditd`; `None`
/// lets the worker detect it.
pub async fn ingest_file(
    worker_url: &str,
    shard: &str,
    labels: HashMap<String, String>,
    format: Option<&str>,
    path: &std::path::Path,
) -> Result<v1::IngestResponse, ClientError> {
    ingest_file_with(
        worker_url,
        &Credentials::default(),
        shard,
        labels,
        format,
        path,
    )
    .await
}

/// [`ingest_file`], presenting `credentials` to a TLS worker.
pub async fn ingest_file_with(
    worker_url: &str,
    credentials: &Credentials,
    shard: &str,
    labels: HashMap<String, String>,
    format: Option<&str>,
    path: &std::path::Path,
) -> Result<v1::IngestResponse, ClientError> {
    use tokio::io::AsyncReadExt as _;
    let channel = channel(worker_url, credentials).await?;
    let file = tokio::fs::File::open(path).await.map_err(|e| {
        tonic::Status::invalid_argument(format!("cannot open {}: {e}", path.display()))
    })?;
    let header = v1::IngestHeader {
        shard: shard.to_owned(),
        labels,
        format: format.unwrap_or_default().to_owned(),
        source: path.display().to_string(),
    };
    // Header first, then the file in chunks, read as the stream is polled. A
    // read error ends the stream; it is reported after the call so a partial
    // upload never passes for a whole one.
    let failed: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>> = Default::default();
    let read_error = failed.clone();
    let chunks = futures::stream::unfold(
        (file, Some(header), false),
        move |(mut file, header, done)| {
            let read_error = read_error.clone();
            async move {
                if done {
                    return None;
                }
                let mut data = vec![0u8; quarry_proto::MODULE_CHUNK_BYTES];
                let read = match file.read(&mut data).await {
                    Ok(read) => read,
                    Err(e) => {
                        if let Ok(mut slot) = read_error.lock() {
                            *slot = Some(e);
                        }
                        return None;
                    }
                };
                data.truncate(read);
                if read == 0 && header.is_none() {
                    return None;
                }
                Some((v1::IngestRequest { header, data }, (file, None, read == 0)))
            }
        },
    );
    let mut client = v1::ingest_service_client::IngestServiceClient::new(channel)
        .max_encoding_message_size(quarry_proto::MAX_MESSAGE_BYTES);
    let response = client.ingest(chunks).await?.into_inner();
    if let Some(error) = failed.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(tonic::Status::data_loss(format!(
            "reading {} failed mid-upload ({error}); the worker stored only the first {} events of it",
            path.display(),
            response.events_stored
        ))
        .into());
    }
    Ok(response)
}

fn source_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

//! Bearer tokens: `quarry.v1.TokenService` (admins create, list and revoke
//! them) and [`Tokens`], which checks a presented token for the access
//! layer. Records are replicated; the leader hashes a new token before it
//! proposes it, so apply stays deterministic and no replica sees the token.

use crate::clock::SharedClock;
use crate::node::NodeHandle;
use crate::service::Api;
use crate::state::{Command, TokenRecord};
use quarry_proto::v1;
use quarry_security::access::TokenCheck;
use quarry_security::{Principal, Role, token};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::{Request, Status};

/// How long a token checked against its hash is trusted without hashing
/// again (revocation and expiry are still checked on every call).
const VERIFIED_FOR: Duration = Duration::from_secs(600);
/// Most verified tokens remembered.
const CACHE: usize = 4096;

fn info(record: &TokenRecord) -> v1::TokenInfo {
    v1::TokenInfo {
        id: record.id.clone(),
        name: record.name.clone(),
        role: record.role.clone(),
        created_ms: record.created_ms,
        expires_ms: record.expires_ms,
        revoked: record.revoked,
        created_by: record.created_by.clone(),
    }
}

#[tonic::async_trait]
impl v1::token_service_server::TokenService for Api {
    #[tracing::instrument(skip_all, fields(name, role))]
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<tonic::Response<v1::CreateTokenResponse>, Status> {
        let (creator, _) = crate::service::caller_of(&request);
        let target = quarry_security::audit::AuditTarget::of(&request);
        let request = request.into_inner();
        let role: Role = request
            .role
            .parse()
            .map_err(|e: quarry_security::SecurityError| Status::invalid_argument(e.to_string()))?;
        if role.is_node() {
            return Err(Status::invalid_argument(format!(
                "a token cannot be a {role}: nodes authenticate with their certificates; use admin, hunter, automation or viewer"
            )));
        }
        let principal = Principal::new(role, request.name.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::Span::current()
            .record("name", principal.name.as_str())
            .record("role", role.as_str());
        let now_ms = self.shared.clock.now_ms();
        let expires_ms = match request.expires_in_seconds {
            0 => 0,
            seconds => {
                let ms = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
                now_ms.saturating_add(ms)
            }
        };
        let minted = token::mint();
        let secret = minted.secret.clone();
        // argon2 takes tens of milliseconds by design: off the runtime.
        let hash = tokio::task::spawn_blocking(move || token::hash(&secret))
            .await
            .map_err(|e| Status::internal(format!("token hashing task failed: {e}")))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let record = TokenRecord {
            id: minted.id,
            name: principal.name,
            role: role.as_str().to_owned(),
            hash,
            created_ms: now_ms,
            expires_ms,
            revoked: false,
            created_by: creator,
        };
        self.shared
            .propose_write(
                "",
                Command::CreateToken {
                    token: record.clone(),
                },
            )
            .await?;
        tracing::info!(token = %record.id, "token created");
        target.set(format!(
            "token {} ({}, {})",
            record.id, record.name, record.role
        ));
        Ok(tonic::Response::new(v1::CreateTokenResponse {
            token: Some(info(&record)),
            secret: minted.secret,
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<v1::ListTokensRequest>,
    ) -> Result<tonic::Response<v1::ListTokensResponse>, Status> {
        let tokens = self
            .shared
            .read(|s| s.tokens.values().map(info).collect())?;
        Ok(tonic::Response::new(v1::ListTokensResponse { tokens }))
    }

    #[tracing::instrument(skip_all, fields(token))]
    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<tonic::Response<v1::TokenInfo>, Status> {
        quarry_security::audit::set_target(&request, format!("token {}", request.get_ref().id));
        let id = request.into_inner().id;
        tracing::Span::current().record("token", id.as_str());
        self.shared
            .propose_write("", Command::RevokeToken { id: id.clone() })
            .await?;
        let record = self
            .shared
            .read(|s| s.tokens.get(&id).cloned())?
            .ok_or_else(|| Status::not_found(format!("token {id} does not exist")))?;
        tracing::info!("token revoked");
        Ok(tonic::Response::new(info(&record)))
    }
}

/// Checks bearer tokens against this replica's token records.
pub struct Tokens {
    node: NodeHandle,
    clock: SharedClock,
    /// SHA-256 of a token whose hash matched -> when it did.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Tokens {
    /// Checks against `node`'s replicated records, judging expiry by `clock`.
    pub fn new(node: NodeHandle, clock: SharedClock) -> Self {
        Self {
            node,
            clock,
            verified: Mutex::new(HashMap::new()),
        }
    }
}

impl TokenCheck for Tokens {
    fn check(&self, presented: &str) -> Result<Principal, String> {
        let id = token::id_of(presented).ok_or_else(|| {
            "the bearer token is malformed; tokens look like tok-<16 hex>.<64 hex>".to_owned()
        })?;
        let record = self
            .node
            .read(|r| r.state.tokens.get(id).cloned())
            .map_err(|e| format!("cannot check the token: {e}"))?
            .ok_or_else(|| format!("token {id} is not known to this cluster"))?;
        // The secret first: only its holder learns whether it was revoked
        // or expired.
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|verified| verified.get(&digest).copied())
            .is_some_and(|at| at.elapsed() < VERIFIED_FOR);
        if !cached {
            if !token::verify(presented, &record.hash) {
                return Err(format!("token {id}: the secret does not match"));
            }
            if let Ok(mut verified) = self.verified.lock() {
                if verified.len() >= CACHE {
                    verified.clear();
                }
                verified.insert(digest, Instant::now());
            }
        }
        if record.revoked {
            return Err(format!("token {id} ({}) was revoked", record.name));
        }
        let now_ms = self.clock.now_ms();
        if record.expires_ms != 0 && now_ms >= record.expires_ms {
            return Err(format!(
                "token {id} ({}) expired; an admin can create a new one with `quarry token create`",
                record.name
            ));
        }
        let role: Role = record
            .role
            .parse()
            .map_err(|e: quarry_security::SecurityError| e.to_string())?;
        Principal::new(role, record.name).map_err(|e| e.to_string())
    }
}

//! Token checks as the sessions of every protocol make them.
//!
//! A token is first looked up in the shard's cache of verified tokens (a
//! pool reconnecting with the same token pays for one signature check, not
//! one per connection). A token signed by a key the appliance has not seen
//! asks the control plane to fetch the provider's keys again and waits a
//! moment for them, so a key rotation at the provider needs no restart; the
//! control plane rate-limits those fetches, and a key that is still unknown
//! afterwards fails closed.
//!
//! Every outcome is logged, and recorded in the audit trail, as an
//! `auth_ok` or `auth_fail` event with the client address and the reason;
//! never with the token.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::identity::{Identity, Reject};
use crate::runtime::shard::{ShardCtx, TargetCtx};

/// How long a session waits for the provider's keys after presenting a
/// token signed by an unknown key.
const KEY_REFRESH_WAIT: Duration = Duration::from_secs(2);
/// How often the waiting session looks for the new keys.
const KEY_REFRESH_POLL: Duration = Duration::from_millis(20);

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies a token presented as a password and logs the outcome.
pub async fn verify_token(
    shard: &ShardCtx,
    target: &TargetCtx,
    peer: SocketAddr,
    token: &[u8],
) -> Result<Identity, Reject> {
    let result = verify_inner(shard, token).await;
    crate::audit::session::auth_event(shard, target, peer, &result);
    match &result {
        Ok(id) => info!(
            event = "auth_ok",
            target = %target.target.name,
            %peer,
            subject = %id.subject,
            groups = ?id.groups,
            issuer = %id.issuer,
            token_id = id.token_id.as_deref().unwrap_or(""),
            "token accepted"
        ),
        Err(reject) => {
            target
                .metrics()
                .error(crate::metrics::ErrorKind::AuthFailed);
            warn!(
                event = "auth_fail",
                target = %target.target.name,
                %peer,
                reason = reject.class(),
                detail = %reject,
                "token refused"
            );
        }
    }
    result
}

async fn verify_inner(shard: &ShardCtx, token: &[u8]) -> Result<Identity, Reject> {
    let Some(verifier) = shard.shared.verifier.as_deref() else {
        return Err(Reject::NoKeys);
    };
    let first = shard.token_cache.verify(verifier, token, now_unix());
    if !matches!(first, Err(Reject::UnknownKey(_))) {
        return first;
    }
    let seen = verifier.request_refresh();
    let waited = monoio::time::timeout(KEY_REFRESH_WAIT, async {
        while verifier.generation() == seen {
            monoio::time::sleep(KEY_REFRESH_POLL).await;
        }
    })
    .await;
    if waited.is_err() {
        return first;
    }
    shard.token_cache.verify(verifier, token, now_unix())
}

/// When a session of `identity` expires: at its token's `exp` it stops
/// taking new commands, and what is in flight then has the configured grace
/// to finish. `None` for identities that do not expire.
pub fn session_expiry(shard: &ShardCtx, identity: &Identity) -> Option<Expiry> {
    let exp = identity.expires_at?;
    let grace = shard
        .shared
        .verifier
        .as_deref()
        .map_or(Duration::ZERO, |v| v.config().expiry_grace);
    let left = Duration::from_secs(exp.saturating_sub(now_unix()));
    Some(Expiry {
        at: std::time::Instant::now() + left,
        grace,
    })
}

/// Completes at the expiry's instant; never when there is none.
pub async fn sleep_until(expiry: Option<Expiry>) {
    match expiry {
        Some(e) => {
            monoio::time::sleep(e.at.saturating_duration_since(std::time::Instant::now())).await
        }
        None => std::future::pending().await,
    }
}

/// When a session's token runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// The token's `exp` on this process' monotonic clock.
    pub at: std::time::Instant,
    /// How long in-flight work may take after `at`.
    pub grace: Duration,
}

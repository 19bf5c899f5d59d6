//! Registry credentials: the password `GetAuthorizationToken` hands out
//! (user `AWS`) and the bearer tokens `GET /v2/token` exchanges it for.
//! Both are the expiry and a nonce MAC'd with the node's secret, so they
//! are checked without being stored and survive a restart.

use std::time::{Duration, SystemTime};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// ECR's authorization tokens last 12 hours.
pub const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// Bearer tokens are short-lived; clients fetch a new one on a 401.
pub const BEARER_TTL: Duration = Duration::from_secs(3600);

/// What a token is for; one kind is not accepted as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Login,
    Bearer,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Login => "nimbus-registry-login",
            Purpose::Bearer => "nimbus-registry-bearer",
        }
    }
}

#[derive(Clone)]
pub struct Tokens {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Tokens {
    pub fn new(secret: &str) -> Self {
        Self { secret: secret.as_bytes().to_vec() }
    }

    fn mac(&self, purpose: Purpose, payload: &str) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes keys of any size");
        m.update(purpose.label().as_bytes());
        m.update(b"\n");
        m.update(payload.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    /// A token valid for `ttl` from `now`, and when it expires.
    pub fn mint(&self, purpose: Purpose, ttl: Duration, now: SystemTime) -> (String, SystemTime) {
        let expires = now + ttl;
        let payload = format!("{}.{}", secs(expires), uuid::Uuid::new_v4().simple());
        (format!("{payload}.{}", b64(&self.mac(purpose, &payload))), expires)
    }

    /// Whether `token` is one of ours for `purpose` and unexpired.
    pub fn check(&self, purpose: Purpose, token: &str, now: SystemTime) -> Result<(), TokenError> {
        let (payload, mac) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let expires = payload.split('.').next().and_then(|e| e.parse::<u64>().ok()).ok_or(TokenError::Invalid)?;
        if !bool::from(b64(&self.mac(purpose, payload)).as_bytes().ct_eq(mac.as_bytes())) {
            return Err(TokenError::Invalid);
        }
        if secs(now) >= expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a token of this registry")]
    Invalid,
    /// Genuine, but past its time: the client is to log in again.
    #[error("Your authorization token has expired. Reauthenticate and try again.")]
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_purpose_secret_and_expiry() {
        let t = Tokens::new("secret");
        let now = SystemTime::now();
        let (login, expires) = t.mint(Purpose::Login, LOGIN_TTL, now);
        assert_eq!(expires, now + LOGIN_TTL);
        assert_eq!(t.check(Purpose::Login, &login, now), Ok(()));
        assert_eq!(t.check(Purpose::Bearer, &login, now), Err(TokenError::Invalid));
        assert_eq!(t.check(Purpose::Login, &login, now + LOGIN_TTL), Err(TokenError::Expired));
        assert_eq!(Tokens::new("other").check(Purpose::Login, &login, now), Err(TokenError::Invalid));
        let forged = login.replacen(|c: char| c.is_ascii_digit(), "9", 1);
        assert_eq!(t.check(Purpose::Login, &forged, now), Err(TokenError::Invalid));
        assert_eq!(t.check(Purpose::Login, "garbage", now), Err(TokenError::Invalid));
    }
}

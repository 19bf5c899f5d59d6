//! Who may use the console: sessions (a random token in an HttpOnly,
//! SameSite=Strict cookie, expiring on the server too), one-time login
//! links, and the same-origin check every console API request passes.
//!
//! State is memory only: a restart signs everyone out and voids unused
//! links, which costs a sign-in, never access. Tokens are kept as their
//! SHA-256, so the table never holds a usable credential.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sigv4::Credentials;

/// How long a session lasts from sign-in, whatever it does.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a login link printed by `nimbus console` may wait to be opened.
pub const LINK_TTL: Duration = Duration::from_secs(5 * 60);
/// The session cookie's name.
pub const COOKIE: &str = "nimbus_console";
/// Live sessions and links are capped: past this the oldest go first.
const MAX_ENTRIES: usize = 10_000;

type Digest32 = [u8; 32];

#[derive(Default)]
struct Table {
    /// Token digest → expiry.
    sessions: HashMap<Digest32, SystemTime>,
    links: HashMap<Digest32, SystemTime>,
}

/// The console's sessions and unused login links.
#[derive(Default)]
pub struct Sessions(Mutex<Table>);

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Forgets what expired, and the soonest to expire past the cap; no timer
/// is needed, as every insert passes here.
fn prune(map: &mut HashMap<Digest32, SystemTime>, now: SystemTime) {
    map.retain(|_, expires| *expires > now);
    while map.len() >= MAX_ENTRIES {
        let Some(first) = map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) else { break };
        map.remove(&first);
    }
}

impl Sessions {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session; returns its token.
    pub fn open(&self, now: SystemTime) -> String {
        let token = new_token();
        let mut t = self.table();
        prune(&mut t.sessions, now);
        t.sessions.insert(digest(&token), now + SESSION_TTL);
        token
    }

    /// When the token's session ends, if it is live.
    pub fn expires(&self, token: &str, now: SystemTime) -> Option<SystemTime> {
        self.table().sessions.get(&digest(token)).copied().filter(|expires| *expires > now)
    }

    /// Ends a session (sign out).
    pub fn close(&self, token: &str) {
        self.table().sessions.remove(&digest(token));
    }

    /// A new one-time login link token.
    pub fn mint_link(&self, now: SystemTime) -> String {
        let token = new_token();
        let mut t = self.table();
        prune(&mut t.links, now);
        t.links.insert(digest(&token), now + LINK_TTL);
        token
    }

    /// Uses up a link: true the first time, if it has not expired.
    pub fn redeem_link(&self, token: &str, now: SystemTime) -> bool {
        self.table().links.remove(&digest(token)).is_some_and(|expires| expires > now)
    }
}

/// Whether a key pair is the node's, compared in constant time.
pub fn is_node_key(node: &Credentials, access_key_id: &str, secret: &str) -> bool {
    let id = node.access_key_id.as_bytes().ct_eq(access_key_id.as_bytes());
    let secret = node.secret_access_key.as_bytes().ct_eq(secret.as_bytes());
    bool::from(id & secret)
}

/// The session tokens a request's cookies carry (a browser sends every
/// cookie of the name whose path covers the request's).
pub fn cookie_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `Set-Cookie` that starts a session: HttpOnly (scripts cannot read
/// it), SameSite=Strict (no other site's page sends it), scoped to the
/// console and expiring with the server's session. Not `Secure`: the node
/// serves plain HTTP, where a browser would drop such a cookie.
pub fn session_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs())
}

/// Whether a `Set-Cookie` value names the session cookie.
pub fn is_session_cookie(set_cookie: &[u8]) -> bool {
    let name = set_cookie.split(|&b| b == b'=').next().unwrap_or_default();
    name.trim_ascii() == COOKIE.as_bytes()
}

/// The `Set-Cookie` that ends a session in the browser.
pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether a request comes from the console's own pages (CSRF defence,
/// besides SameSite=Strict). Any request a browser marks as another site's
/// (`Sec-Fetch-Site`) is refused. A state-changing one must also name this
/// origin in `Origin`, which browsers send with every POST and which
/// another page cannot forge, and carry a JSON body, which a cross-site
/// form cannot send without a preflight that is never granted.
pub fn same_origin(headers: &HeaderMap, state_changing: bool) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let site_ok = match header("sec-fetch-site") {
        None => true,
        Some(site) => site == "same-origin" || (!state_changing && site == "none"),
    };
    if !site_ok {
        return false;
    }
    if !state_changing {
        return true;
    }
    let host = header("host");
    let origin_ok = match (header("origin"), host) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
        }
        _ => false,
    };
    let json = header("content-type").is_some_and(|t| t.starts_with("application/json"));
    origin_ok && json
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn sessions_expire_on_the_server_and_close() {
        let s = Sessions::default();
        let token = s.open(at(0));
        assert!(s.expires(&token, at(1)).is_some());
        assert!(s.expires("someone-else", at(1)).is_none());
        assert!(s.expires(&token, at(SESSION_TTL.as_secs())).is_none(), "expired");
        let other = s.open(at(0));
        s.close(&other);
        assert!(s.expires(&other, at(1)).is_none(), "signed out");
    }

    #[test]
    fn a_link_works_once_and_expires() {
        let s = Sessions::default();
        let link = s.mint_link(at(0));
        assert!(s.redeem_link(&link, at(10)));
        assert!(!s.redeem_link(&link, at(11)), "used");
        let late = s.mint_link(at(0));
        assert!(!s.redeem_link(&late, at(LINK_TTL.as_secs())), "expired");
        assert!(!s.redeem_link("forged", at(1)));
    }

    #[test]
    fn the_cap_drops_the_soonest_to_expire() {
        let mut map = HashMap::new();
        for i in 0..MAX_ENTRIES {
            map.insert(digest(&i.to_string()), at(100 + i as u64));
        }
        prune(&mut map, at(0));
        assert_eq!(map.len(), MAX_ENTRIES - 1);
        assert!(!map.contains_key(&digest("0")));
    }

    #[test]
    fn only_the_node_key_pair_signs_in() {
        let node = Credentials { access_key_id: "AKID".into(), secret_access_key: "secret".into() };
        assert!(is_node_key(&node, "AKID", "secret"));
        assert!(!is_node_key(&node, "AKID", "secreT"));
        assert!(!is_node_key(&node, "AKIE", "secret"));
        assert!(!is_node_key(&node, "AKID", ""));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; nimbus_console=abc; b=2; nimbus_console=def".parse().unwrap());
        assert_eq!(cookie_tokens(&h).collect::<Vec<_>>(), ["abc", "def"]);
        h.insert("cookie", "nimbus_consoleX=abc".parse().unwrap());
        assert_eq!(cookie_tokens(&h).next(), None);
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let own =
            [("host", "127.0.0.1:9070"), ("origin", "http://127.0.0.1:9070"), ("content-type", "application/json")];
        assert!(same_origin(&headers(&own), true));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin"), own[0], own[1], own[2]]), true));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site"), own[0], own[1], own[2]]), true));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site"), own[0], own[1], own[2]]), true));
        assert!(!same_origin(&headers(&[own[0], ("origin", "http://evil.example"), own[2]]), true));
        assert!(!same_origin(&headers(&[own[0], ("origin", "null"), own[2]]), true));
        assert!(!same_origin(&headers(&[own[0], own[2]]), true), "no Origin on a POST");
        assert!(!same_origin(&headers(&[own[0], own[1], ("content-type", "text/plain")]), true), "a form's body");
        assert!(same_origin(&headers(&[("sec-fetch-site", "none")]), false), "typed into the address bar");
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")]), false));
    }
}

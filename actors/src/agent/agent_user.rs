//! Running agents as another user (`AGENT_UID`/`AGENT_GID` or `AGENT_USER`): the user is
//! resolved once at start-up, and a task's directory — with everything the executor wrote there
//! for the agent (its Claude config, MCP file, clone) — is handed to that user before each
//! agent process starts. An agent of another user cannot read the executor's environment or
//! memory in `/proc`, nor signal it.

use crate::config::AgentUser;

/// Why `AGENT_USER`/`AGENT_UID`/`AGENT_GID` cannot be used (reported at start-up).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentUserError {
    /// `AGENT_USER` names no user of this machine.
    #[error("AGENT_USER `{0}` is not a user of this machine")]
    UnknownUser(String),
    /// A numeric id that is not a number.
    #[error("{0} must be a numeric id")]
    NotNumeric(&'static str),
    /// `AGENT_GID` without `AGENT_UID`.
    #[error("AGENT_GID needs AGENT_UID (or AGENT_USER)")]
    GidWithoutUid,
}

/// The agent user from the three settings: a user name (its primary group unless `AGENT_GID`
/// says otherwise) or numeric ids (the group defaults to the uid). All unset → `None`.
pub fn resolve(
    user: Option<&str>,
    uid: Option<&str>,
    gid: Option<&str>,
) -> Result<Option<AgentUser>, AgentUserError> {
    let num = |v: &str, what| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| AgentUserError::NotNumeric(what))
    };
    let gid = gid.map(|g| num(g, "AGENT_GID")).transpose()?;
    if let Some(name) = user {
        let found = lookup(name).ok_or_else(|| AgentUserError::UnknownUser(name.into()))?;
        return Ok(Some(AgentUser {
            uid: found.uid,
            gid: gid.unwrap_or(found.gid),
        }));
    }
    match (uid.map(|u| num(u, "AGENT_UID")).transpose()?, gid) {
        (Some(uid), gid) => Ok(Some(AgentUser {
            uid,
            gid: gid.unwrap_or(uid),
        })),
        (None, Some(_)) => Err(AgentUserError::GidWithoutUid),
        (None, None) => Ok(None),
    }
}

/// `name`'s ids from the system's user database.
fn lookup(name: &str) -> Option<AgentUser> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the two ids out
    // at once (start-up, single-threaded use).
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null pointer from getpwnam.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some(AgentUser { uid, gid })
}

pub use crate::task_dir::hand_over;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_resolve() {
        assert_eq!(resolve(None, None, None), Ok(None));
        assert_eq!(
            resolve(None, Some("65534"), None),
            Ok(Some(AgentUser {
                uid: 65534,
                gid: 65534
            }))
        );
        assert_eq!(
            resolve(None, Some("1000"), Some("100")),
            Ok(Some(AgentUser {
                uid: 1000,
                gid: 100
            }))
        );
        assert_eq!(
            resolve(None, None, Some("1")),
            Err(AgentUserError::GidWithoutUid)
        );
        assert_eq!(
            resolve(None, Some("x"), None),
            Err(AgentUserError::NotNumeric("AGENT_UID"))
        );
        assert_eq!(
            resolve(Some("root"), None, None),
            Ok(Some(AgentUser { uid: 0, gid: 0 }))
        );
        assert!(resolve(Some("no-such-user-here"), None, None).is_err());
    }
}

//! Extended-attribute name mapping (`--xattrmap`), with upstream virtiofsd's rule semantics.
//!
//! Rules are tried in order and the first that matches decides. A name from the guest (GETXATTR,
//! SETXATTR, REMOVEXATTR, a security label) matches a rule of client scope whose `key` starts it;
//! a name from the host (LISTXATTR) matches a rule of server scope whose `prepend` starts it. The
//! configuration layer has expanded `map` rules and appended a final catch-all `bad` rule where
//! the rules had none, so every name meets a rule.

use std::borrow::Cow;

use serde::Deserialize;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum XattrRuleKind {
    /// Guest names get `prepend` in front; host names lose it.
    Prefix,
    /// The name passes unchanged.
    Ok,
    /// Guest names are refused with `EPERM` (`ENODATA` on GETXATTR); host names are hidden.
    Bad,
    /// Guest names are refused with `EOPNOTSUPP`; host names are hidden.
    Unsupported,
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct XattrRule {
    pub kind: XattrRuleKind,
    /// Applies to names from the guest.
    pub client: bool,
    /// Applies to names from the host.
    pub server: bool,
    pub key: String,
    pub prepend: String,
}

/// Why a rule list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XattrMapError {
    #[error("the rule list is empty")]
    NoRules,
    #[error("rule {index} applies to neither client nor server names")]
    NoScope { index: usize },
    #[error("rule {index} holds a NUL byte")]
    Nul { index: usize },
    #[error("no rule matches every {0} name: the compiled list must end with a catch-all rule")]
    Unterminated(&'static str),
}

/// What becomes of a name the guest sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestName<'a> {
    /// Use this host name.
    Host(Cow<'a, [u8]>),
    /// Refused: `EPERM` (GETXATTR answers `ENODATA`, as for a name that does not exist).
    Denied,
    /// Refused with `EOPNOTSUPP`.
    Unsupported,
}

/// A checked rule list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<XattrRule>")]
pub struct XattrMap {
    rules: Vec<XattrRule>,
}

impl TryFrom<Vec<XattrRule>> for XattrMap {
    type Error = XattrMapError;

    fn try_from(rules: Vec<XattrRule>) -> Result<Self, Self::Error> {
        XattrMap::new(rules)
    }
}

impl XattrMap {
    /// Checks that every rule has a scope and that every name, from either side, meets a rule.
    pub fn new(rules: Vec<XattrRule>) -> Result<Self, XattrMapError> {
        if rules.is_empty() {
            return Err(XattrMapError::NoRules);
        }
        for (index, rule) in rules.iter().enumerate() {
            if !rule.client && !rule.server {
                return Err(XattrMapError::NoScope { index });
            }
            if rule.key.contains('\0') || rule.prepend.contains('\0') {
                return Err(XattrMapError::Nul { index });
            }
        }
        if !rules.iter().any(|r| r.client && r.key.is_empty()) {
            return Err(XattrMapError::Unterminated("guest"));
        }
        if !rules.iter().any(|r| r.server && r.prepend.is_empty()) {
            return Err(XattrMapError::Unterminated("host"));
        }
        Ok(XattrMap { rules })
    }

    pub fn rules(&self) -> &[XattrRule] {
        &self.rules
    }

    /// The index of the rule that decides a guest name.
    pub fn guest_rule(&self, name: &[u8]) -> usize {
        self.rules
            .iter()
            .position(|r| r.client && name.starts_with(r.key.as_bytes()))
            // `new` checked that a catch-all exists.
            .unwrap_or(self.rules.len() - 1)
    }

    /// The index of the rule that decides a host name.
    pub fn host_rule(&self, name: &[u8]) -> usize {
        self.rules
            .iter()
            .position(|r| r.server && name.starts_with(r.prepend.as_bytes()))
            .unwrap_or(self.rules.len() - 1)
    }

    /// The host name for guest name `name`, or why there is none.
    pub fn to_host<'a>(&self, name: &'a [u8]) -> GuestName<'a> {
        let rule = &self.rules[self.guest_rule(name)];
        match rule.kind {
            XattrRuleKind::Ok => GuestName::Host(Cow::Borrowed(name)),
            XattrRuleKind::Bad => GuestName::Denied,
            XattrRuleKind::Unsupported => GuestName::Unsupported,
            XattrRuleKind::Prefix => {
                let mut host = Vec::with_capacity(rule.prepend.len() + name.len());
                host.extend_from_slice(rule.prepend.as_bytes());
                host.extend_from_slice(name);
                GuestName::Host(Cow::Owned(host))
            }
        }
    }

    /// The guest name for host name `name`; `None` when the guest must not see it.
    pub fn to_guest<'a>(&self, name: &'a [u8]) -> Option<&'a [u8]> {
        let rule = &self.rules[self.host_rule(name)];
        match rule.kind {
            XattrRuleKind::Ok => Some(name),
            XattrRuleKind::Bad | XattrRuleKind::Unsupported => None,
            XattrRuleKind::Prefix => Some(&name[rule.prepend.len()..]),
        }
    }

    /// A LISTXATTR answer (NUL-terminated names) as the guest sees it: hidden names dropped, the
    /// others renamed. Empty names (a prefix rule that strips a whole name) are dropped too.
    pub fn list_to_guest(&self, list: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(list.len());
        for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if let Some(guest) = self.to_guest(name).filter(|g| !g.is_empty()) {
                out.extend_from_slice(guest);
                out.push(0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        kind: XattrRuleKind,
        client: bool,
        server: bool,
        key: &str,
        prepend: &str,
    ) -> XattrRule {
        XattrRule {
            kind,
            client,
            server,
            key: key.into(),
            prepend: prepend.into(),
        }
    }

    /// `:map:trusted.:user.virtiofs.:` as the configuration layer expands it.
    fn map_trusted() -> XattrMap {
        use XattrRuleKind::*;
        XattrMap::new(vec![
            rule(Prefix, true, true, "trusted.", "user.virtiofs."),
            rule(Bad, true, true, "user.virtiofs.", "trusted."),
            rule(Ok, true, true, "", ""),
        ])
        .unwrap()
    }

    #[test]
    fn prefix_rules_rename_both_ways() {
        let m = map_trusted();
        assert_eq!(
            m.to_host(b"trusted.x"),
            GuestName::Host(Cow::Owned(b"user.virtiofs.trusted.x".to_vec()))
        );
        assert_eq!(
            m.to_guest(b"user.virtiofs.trusted.x"),
            Some(&b"trusted.x"[..])
        );
        assert_eq!(m.to_host(b"user.virtiofs.x"), GuestName::Denied);
        assert_eq!(m.to_guest(b"trusted.x"), None);
        assert_eq!(
            m.to_host(b"user.a"),
            GuestName::Host(Cow::Borrowed(&b"user.a"[..]))
        );
        assert_eq!(
            m.list_to_guest(b"user.a\0trusted.hidden\0user.virtiofs.trusted.t\0"),
            b"user.a\0trusted.t\0".to_vec()
        );
    }

    #[test]
    fn unsupported_and_bad_differ_only_for_the_guest() {
        use XattrRuleKind::*;
        let m = XattrMap::new(vec![
            rule(Unsupported, true, true, "security.", "security."),
            rule(Bad, true, true, "", ""),
        ])
        .unwrap();
        assert_eq!(m.to_host(b"security.selinux"), GuestName::Unsupported);
        assert_eq!(m.to_host(b"user.x"), GuestName::Denied);
        assert_eq!(
            m.list_to_guest(b"security.selinux\0user.x\0"),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn lists_must_be_total_and_scoped() {
        use XattrRuleKind::*;
        assert_eq!(XattrMap::new(vec![]), Err(XattrMapError::NoRules));
        assert_eq!(
            XattrMap::new(vec![rule(Ok, true, false, "", "")]),
            Err(XattrMapError::Unterminated("host"))
        );
        assert_eq!(
            XattrMap::new(vec![rule(Ok, false, false, "", "")]),
            Err(XattrMapError::NoScope { index: 0 })
        );
        let wire = r#"[{"kind":"ok","client":true,"server":true,"key":"","prepend":""}]"#;
        assert!(serde_json::from_str::<XattrMap>(wire).is_ok());
        let unterminated = r#"[{"kind":"ok","client":true,"server":true,"key":"a","prepend":""}]"#;
        assert!(serde_json::from_str::<XattrMap>(unterminated).is_err());
    }
}

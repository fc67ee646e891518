//! `<state_dir>/owners.toml`: the persisted routing switch of each DVIPA (parse and render).

use super::*;

/// File name of the persisted ownership in [`Config::state_dir`].
pub const OWNERS_FILE: &str = "owners.toml";

/// The persisted routing switch of each DVIPA (`<state_dir>/owners.toml`), as the controller
/// writes it on every ownership change:
///
/// ```toml
/// # dvipa controller state: the routing switch of each DVIPA (rewritten on every change)
/// [[dvipa]]
/// addr = "203.0.113.20"
/// owner = "MVS1"
/// admin_pinned = true      # moved there by an operator (no takeback to the primary)
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OwnerState {
    /// One entry per DVIPA.
    #[serde(rename = "dvipa", default)]
    pub dvipas: Vec<PersistedOwner>,
}

/// One DVIPA's persisted routing switch.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PersistedOwner {
    /// The DVIPA.
    pub addr: Ipv4Addr,
    /// Its routing switch when the state was written.
    pub owner: String,
    /// Placed there by an operator's move (the primary does not take it back).
    #[serde(default)]
    pub admin_pinned: bool,
}

impl OwnerState {
    /// From `(dvipa, routing switch, pinned by an operator)`, as `Core::ownership` returns it.
    pub fn from_ownership(v: &[(Ipv4Addr, String, bool)]) -> OwnerState {
        OwnerState {
            dvipas: v
                .iter()
                .map(|(addr, owner, admin_pinned)| PersistedOwner {
                    addr: *addr,
                    owner: owner.clone(),
                    admin_pinned: *admin_pinned,
                })
                .collect(),
        }
    }

    /// Parse a state file (`file` is only used in messages).
    pub fn parse(file: &str, src: &str) -> Result<OwnerState, ConfigError> {
        toml::from_str(src).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(src, s.start)).unwrap_or((1, 1));
            ConfigError::Toml {
                file: file.into(),
                line,
                col,
                msg: e.message().to_string(),
            }
        })
    }

    /// The file's text ([`OwnerState::parse`] reads it back).
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# dvipa controller state: the routing switch of each DVIPA (rewritten on every \
             change)\n",
        );
        for d in &self.dvipas {
            out.push_str(&format!(
                "\n[[dvipa]]\naddr = \"{}\"\nowner = {}\nadmin_pinned = {}\n",
                d.addr,
                toml_string(&d.owner),
                d.admin_pinned
            ));
        }
        out
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

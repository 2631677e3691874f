//! The configuration file (`config/icephone.toml` is the annotated
//! example): SIP accounts, ICE (STUN and TURN servers, policy) and audio
//! (devices, codecs). A key we do not know is an error naming its line,
//! never a silent default. Command-line flags override the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "account")]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub ice: IceSection,
    #[serde(default)]
    pub audio: AudioSection,
    #[serde(default)]
    pub serve: super::serve::ServeSection,
}

/// `[ice]`: how calls find their path.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceSection {
    /// STUN servers, `stun:HOST[:PORT]`.
    #[serde(default)]
    pub stun: Vec<String>,
    /// `[[ice.turn]]` tables.
    #[serde(default)]
    pub turn: Vec<TurnEntry>,
    /// `all`, `relay` or `none`.
    pub policy: Option<IcePolicy>,
    /// `regular` (RFC 8445) or `aggressive` (RFC 5245, for old peers).
    pub nomination: Option<NominationName>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NominationName {
    Regular,
    Aggressive,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IcePolicy {
    All,
    Relay,
    None,
}

impl IcePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            IcePolicy::All => "all",
            IcePolicy::Relay => "relay",
            IcePolicy::None => "none",
        }
    }
}

/// One TURN server with its credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnEntry {
    /// `turn:HOST[:PORT][?transport=tcp]` or `turns:HOST[:PORT]`.
    pub url: String,
    pub user: String,
    pub password: Option<String>,
    pub password_command: Option<String>,
}

impl std::fmt::Debug for TurnEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnEntry")
            .field("url", &self.url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl TurnEntry {
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        secret(
            &self.url,
            self.password.as_deref(),
            self.password_command.as_deref(),
        )
    }
}

/// `[audio]`: where sound comes from and goes, and how it is coded.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSection {
    /// `default`, a device name, `tone:HZ`, `file:PATH.wav` or `silence`.
    pub mic: Option<String>,
    /// `default`, a device name, `file:PATH.wav` or `null`.
    pub speaker: Option<String>,
    /// Voice codecs in order of preference.
    pub codecs: Option<Vec<String>>,
    /// Packet time, ms: 20 is what icephone sends (checked, so a 40 here
    /// is an error rather than silently ignored).
    pub ptime: Option<u32>,
    /// Bounds of the adaptive jitter buffer, ms: it holds at least
    /// `jitter_min_ms` and never more than `jitter_max_ms`.
    pub jitter_min_ms: Option<u32>,
    pub jitter_max_ms: Option<u32>,
}

/// One `[[account]]` table.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub aor: String,
    pub password: Option<String>,
    /// A shell command whose first line of output is the password (a
    /// password manager), so the file need not hold it.
    pub password_command: Option<String>,
    pub auth_user: Option<String>,
    pub registrar: Option<String>,
    pub outbound_proxy: Option<String>,
    pub expires: Option<u32>,
    pub sip_port: Option<u16>,
    pub ca: Option<PathBuf>,
}

impl std::fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log.
        f.debug_struct("AccountConfig")
            .field("aor", &self.aor)
            .field("registrar", &self.registrar)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("password_command for {aor} failed: {reason}")]
    PasswordCommand { aor: String, reason: String },
}

impl Config {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                message: e.message().trim().to_owned(),
            }
        })
    }

    /// The file `--config` names, or the user's own if there is one
    /// (`$XDG_CONFIG_HOME/icephone/icephone.toml`, else
    /// `~/.config/icephone/icephone.toml`); no file at the default place is
    /// an empty configuration.
    pub fn find(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(path) = explicit {
            return Self::load(path);
        }
        match default_path() {
            Some(path) if path.is_file() => Self::load(&path),
            _ => Ok(Config::default()),
        }
    }

    /// The account for `aor` (as the user typed it), or the first one.
    pub fn account(&self, aor: Option<&str>) -> Option<&AccountConfig> {
        match aor {
            Some(aor) => self.accounts.iter().find(|a| a.aor.trim() == aor.trim()),
            None => self.accounts.first(),
        }
    }
}

/// Sets `key = "value"` in the `[audio]` table of the file at `path`
/// (created if missing), keeping every other line, comment and key as it
/// is: the phone remembers the devices the user picked.
pub fn remember_audio(path: &Path, key: &str, value: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = format!("{key} = {}", toml_string(value));
    let mut out: Vec<String> = Vec::new();
    let (mut in_audio, mut found_table, mut written) = (false, false, false);
    for l in text.lines() {
        let trimmed = l.trim();
        if trimmed.starts_with('[') {
            if in_audio && !written {
                out.push(line.clone());
                written = true;
            }
            in_audio = trimmed == "[audio]";
            found_table |= in_audio;
        } else if in_audio && !written {
            let name = trimmed.split('=').next().unwrap_or("").trim();
            if name == key {
                out.push(line.clone());
                written = true;
                continue;
            }
        }
        out.push(l.to_owned());
    }
    if !written {
        if !found_table {
            if out.last().is_some_and(|l| !l.trim().is_empty()) {
                out.push(String::new());
            }
            out.push("[audio]".into());
        }
        if in_audio || !found_table {
            out.push(line);
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, out.join("\n") + "\n")
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut s = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => s.push_str(&format!("\\u{:04X}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("icephone").join("icephone.toml"))
}

impl AccountConfig {
    /// The password: the `password` key, else the first line the
    /// `password_command` prints.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        secret(
            &self.aor,
            self.password.as_deref(),
            self.password_command.as_deref(),
        )
    }
}

/// A password given plainly, or the first line a command prints (a
/// password manager), so the file need not hold it. `whose` names it in
/// errors.
fn secret(
    whose: &str,
    password: Option<&str>,
    command: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    if let Some(p) = password {
        return Ok(Some(p.to_owned()));
    }
    let Some(cmd) = command else {
        return Ok(None);
    };
    let failed = |reason: String| ConfigError::PasswordCommand {
        aor: whose.to_owned(),
        reason,
    };
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        // Its output is not shown: it may hold the secret.
        return Err(failed(format!("it exited with {}", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next().map(str::trim) {
        Some(p) if !p.is_empty() => Ok(Some(p.to_owned())),
        _ => Err(failed("it printed nothing".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn accounts_parse_and_are_found_by_aor() {
        let c = parse(
            "[[account]]\naor = \"sip:alice@example.org\"\npassword = \"pw\"\nexpires = 600\n\n\
             [[account]]\naor = \"sip:bob@example.org\"\nregistrar = \"sip:10.0.0.1;transport=tcp\"\n",
        )
        .unwrap();
        assert_eq!(c.accounts.len(), 2);
        assert_eq!(c.account(None).unwrap().aor, "sip:alice@example.org");
        let bob = c.account(Some("sip:bob@example.org")).unwrap();
        assert_eq!(bob.registrar.as_deref(), Some("sip:10.0.0.1;transport=tcp"));
        assert!(c.account(Some("sip:carol@example.org")).is_none());
        assert!(!format!("{:?}", c.accounts[0]).contains("pw\""));
    }

    #[test]
    fn an_unknown_key_names_its_line() {
        let err = parse("[[account]]\naor = \"sip:a@b\"\n\npasword = \"typo\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.toml, line 4:"), "{text}");
        assert!(text.contains("pasword"), "{text}");
        let err = parse("[accounts]\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("accounts"), "{err}");
    }

    #[test]
    fn wrong_types_and_bad_syntax_name_their_line() {
        let err = parse("[[account]]\naor = \"sip:a@b\"\nexpires = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse("[[account]]\naor = sip:a@b\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse("[[account]]\npassword = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("aor"), "{err}");
    }

    #[test]
    fn password_command_gives_its_first_line_and_failures_hide_output() {
        let mut a = AccountConfig {
            aor: "sip:a@b".into(),
            password_command: Some("printf 'from-cmd\\nignored\\n'".into()),
            ..Default::default()
        };
        assert_eq!(a.password().unwrap().as_deref(), Some("from-cmd"));
        a.password_command = Some("echo secret-output; exit 3".into());
        let err = a.password().unwrap_err().to_string();
        assert!(
            err.contains("exit status: 3") && !err.contains("secret-output"),
            "{err}"
        );
        a.password = Some("direct".into());
        assert_eq!(a.password().unwrap().as_deref(), Some("direct"));
    }

    #[test]
    fn a_missing_explicit_file_is_an_error_naming_it() {
        let err = Config::find(Some(Path::new("/nonexistent/icephone.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/icephone.toml"));
    }
}

#[cfg(test)]
mod example {
    use super::*;

    /// The shipped example is a valid configuration.
    #[test]
    fn the_annotated_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/icephone.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(c.accounts[0].aor, "sip:alice@example.org");
        assert_eq!(c.accounts[0].expires, Some(3600));
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn ice_and_audio_sections_parse_and_bad_values_name_their_line() {
        let c = parse(
            "[ice]\nstun = [\"stun:stun.example.org\"]\npolicy = \"relay\"\n\
             [[ice.turn]]\nurl = \"turn:t.example.org?transport=tcp\"\nuser = \"u\"\npassword_command = \"echo s3cret\"\n\
             [audio]\nmic = \"tone:440\"\ncodecs = [\"pcmu\"]\n",
        )
        .unwrap();
        assert_eq!(c.ice.policy, Some(IcePolicy::Relay));
        assert_eq!(c.ice.turn[0].password().unwrap().as_deref(), Some("s3cret"));
        assert!(!format!("{:?}", c.ice.turn[0]).contains("s3cret"));
        assert_eq!(c.audio.mic.as_deref(), Some("tone:440"));
        let err = parse("[ice]\npolicy = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = parse("[audio]\n\nvolume = 3\n").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("volume"), "{err}");
    }

    #[test]
    fn remembered_devices_edit_only_their_line() {
        let dir = std::env::temp_dir().join(format!("icephone-remember-{}", std::process::id()));
        let path = dir.join("icephone.toml");
        let _ = std::fs::remove_dir_all(&dir);
        // No file yet: one is made with an [audio] table.
        remember_audio(&path, "mic", "vmic").unwrap();
        assert_eq!(
            Config::load(&path).unwrap().audio.mic.as_deref(),
            Some("vmic")
        );
        // A file with comments and other tables: only the key changes.
        std::fs::write(
            &path,
            "# mine\n[[account]]\naor = \"sip:a@b\"\n\n[audio]\n# the mic\nmic = \"old\"\ncodecs = [\"opus\"]\n[ice]\npolicy = \"all\"\n",
        )
        .unwrap();
        remember_audio(&path, "mic", "alsa \"quoted\" name").unwrap();
        remember_audio(&path, "speaker", "spk").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.audio.mic.as_deref(), Some("alsa \"quoted\" name"));
        assert_eq!(c.audio.speaker.as_deref(), Some("spk"));
        assert_eq!(c.accounts.len(), 1);
        assert!(
            text.contains("# mine") && text.contains("# the mic"),
            "{text}"
        );
        assert_eq!(text.matches("[audio]").count(), 1, "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

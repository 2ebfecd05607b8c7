//! A real IMAP server for tests: Debian's Dovecot (`dovecot-imapd`), configured in a
//! temporary directory (passwd-file users, Maildir storage, one listener on a free loopback
//! port), run in the foreground as a child process and stopped when the [`Dovecot`] is
//! dropped. Messages are delivered with Dovecot's own `doveadm save`, as a local delivery agent
//! would.

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::local_server::{self, SelfSigned, ServerTls};

/// The unprivileged user mail is stored as (Dovecot refuses uid 0 for mail).
const MAIL_UID: u32 = 65534;
const MAIL_GID: u32 = 65534;

/// How to start Dovecot.
#[derive(Debug, Clone, Default)]
pub struct DovecotOptions {
    /// TLS mode of the one listener; a self-signed certificate is generated for it.
    pub tls: ServerTls,
}

/// A running Dovecot with one user.
#[derive(Debug)]
pub struct Dovecot {
    binary: PathBuf,
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    cert: Option<SelfSigned>,
}

/// The test user's name.
pub const USER: &str = "maya";
/// The test user's password.
pub const PASSWORD: &str = "imap-test-password";

fn dovecot_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("ENGAGER_DOVECOT") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("dovecot"))
            .find(|p| p.is_file())
    });
    from_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/dovecot");
        sbin.is_file().then_some(sbin)
    })
}

impl Dovecot {
    /// Starts Dovecot. `None` means it is not installed and the test should skip (never in
    /// CI, where that panics instead).
    pub fn start(options: DovecotOptions) -> Option<Dovecot> {
        let Some(binary) = dovecot_binary() else {
            return local_server::unavailable(
                "Dovecot (IMAP server)",
                "no `dovecot` binary on PATH or at /usr/sbin/dovecot (Debian package dovecot-imapd).",
            );
        };
        let mut last_error = String::new();
        // The port is chosen before Dovecot binds it; another process may take it meanwhile.
        for _ in 0..3 {
            match Self::try_start(&binary, &options) {
                Ok(dovecot) => return Some(dovecot),
                Err(e) => last_error = e,
            }
        }
        panic!("Dovecot did not start: {last_error}");
    }

    fn try_start(binary: &Path, options: &DovecotOptions) -> Result<Dovecot, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root = dir.path();
        // Dovecot's login processes run as `dovenull` and must reach the sockets below.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let home = root.join("home").join(USER);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(home.join("Maildir").join(sub)).map_err(|e| e.to_string())?;
        }
        chown_tree(&root.join("home"))?;
        std::fs::write(
            root.join("users"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"),
        )
        .map_err(|e| e.to_string())?;
        let port = local_server::free_port();
        let cert = match options.tls {
            ServerTls::None => None,
            _ => Some(SelfSigned::generate(root)),
        };
        let ssl = match (&cert, options.tls) {
            (Some(cert), _) => format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                cert.cert_path.display(),
                cert.key_path.display()
            ),
            (None, _) => "ssl = no\n".to_owned(),
        };
        let (imap_port, imaps_port) = match options.tls {
            ServerTls::Implicit => (0, port),
            _ => (port, 0),
        };
        let r = root.display();
        let config = format!(
            r#"# Written by engager-testkit for one test; see dovecot.rs.
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/users
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={r}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
"#
        );
        let config_path = root.join("dovecot.conf");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let mut child = Command::new(binary)
            .arg("-F")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let log = || std::fs::read_to_string(root.join("dovecot.log")).unwrap_or_default();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("dovecot exited ({status}):\n{}", log()));
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                // A plain listener greets at once; a TLS one waits for a handshake.
                if options.tls == ServerTls::Implicit {
                    break;
                }
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                let mut greeting = [0u8; 4];
                if stream.read_exact(&mut greeting).is_ok() && &greeting == b"* OK" {
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                local_server::stop(&mut child);
                return Err(format!("no IMAP greeting on port {port}:\n{}", log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Dovecot {
            binary: binary.to_path_buf(),
            child,
            port,
            dir,
            cert,
        })
    }

    /// The loopback port of its listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The certificate a client must trust (TLS modes only).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.cert.as_ref().map(|c| c.cert_path.as_path())
    }

    /// Delivers a message into a folder (`INBOX` or another folder's name) with Dovecot's own
    /// `doveadm save`, as a delivery agent would: UIDs are assigned in delivery order.
    pub fn deliver(&self, folder: &str, raw: &[u8]) {
        use std::io::Write;
        if !folder.eq_ignore_ascii_case("INBOX") {
            // Fails harmlessly when the folder exists.
            let _ = self
                .doveadm(&["mailbox", "create", "-u", USER, folder])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let mut child = self
            .doveadm(&["save", "-u", USER, "-m", folder])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run doveadm save");
        child
            .stdin
            .take()
            .expect("doveadm stdin")
            .write_all(raw)
            .expect("write the message to doveadm");
        let output = child.wait_with_output().expect("doveadm save");
        assert!(
            output.status.success(),
            "doveadm save failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn doveadm(&self, args: &[&str]) -> Command {
        let binary = self
            .binary
            .parent()
            .and_then(|sbin| sbin.parent())
            .map(|usr| usr.join("bin/doveadm"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("doveadm"));
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .args(args);
        command
    }

    /// Runs a `doveadm` command against this server (e.g. `mailbox update -u maya
    /// --uid-validity 7 INBOX`, `flags remove -u maya $Keyword mailbox INBOX all`), panicking
    /// with its output when it fails.
    pub fn doveadm_ok(&self, args: &[&str]) {
        let output = self.doveadm(args).output().expect("run doveadm");
        assert!(
            output.status.success(),
            "doveadm {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Dovecot's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

fn chown_tree(path: &Path) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(MAIL_UID), Some(MAIL_GID))
        .map_err(|e| format!("chown {}: {e}", path.display()))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| e.to_string())? {
            chown_tree(&entry.map_err(|e| e.to_string())?.path())?;
        }
    }
    Ok(())
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        local_server::stop(&mut self.child);
    }
}

//! Container images the test suites build for themselves, since no registry can be reached:
//!
//! - [`httpd_image`]: our tiny HTTP server (`src/bin/flowcase-test-httpd`) FROM scratch, with
//!   the shared libraries `ldd` lists and the dynamic loader copied to the same paths;
//! - [`registry::Registry`]: a tiny registry (HTTP API v2) on loopback that dockerd pulls from;
//! - [`guacd_double_image`]: the e2e crate's guacd double program the same way, the guacd
//!   sidecar of the tests;
//! - [`vnc_image`]: a VNC desktop made of Debian's `Xtigervnc` (package
//!   tigervnc-standalone-server) the same way, plus the minimal set it refuses to start
//!   without: `xkbcomp`, the XKB data and `/bin/sh` (the X server runs
//!   `sh -c "xkbcomp ..."` to compile its keymap). No fonts are needed. Its entrypoint is our
//!   server binary in `vnc` mode, which turns `$VNC_PASSWORD` into a password file and execs
//!   Xtigervnc with `-SecurityTypes VncAuth` (or `None` without a password).
//!
//! Images are tagged by a hash of what goes into them (`flowcase-test-httpd:<hash>`), so a
//! repeated run reuses them and a changed input builds a new one. The server binary is compiled
//! with `rustc` directly (it is one std-only file), not through cargo, so building it from inside
//! a running test never waits for the cargo lock; it is cached in `target/flowcase-test-images/`.
//! Everything here blocks: call it from `spawn_blocking` or before the runtime matters.

pub mod des;
pub mod registry;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// Label on every image built here, so they can be listed and removed together.
pub const IMAGE_LABEL: &str = "flowcase.test-image";

const HTTPD_NAME: &str = "flowcase-test-httpd";
const XTIGERVNC: &str = "/usr/bin/Xtigervnc";
const VNC_EXTRA_BINARIES: [&str; 2] = ["/bin/sh", "/usr/bin/xkbcomp"];
const XKB_DATA: &str = "/usr/share/X11/xkb";

type Result<T> = std::result::Result<T, String>;

/// The tag of the HTTP server image, built on first use.
pub fn httpd_image() -> Result<String> {
    static TAG: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    cached(&TAG, || {
        let binary = httpd_binary()?;
        let mut ctx = Context::new()?;
        ctx.add_binary(&binary, Path::new("/flowcase-test-httpd"))?;
        ctx.build(HTTPD_NAME, &["/flowcase-test-httpd"])
    })
}

/// The tag of the VNC desktop image (port 5900), built on first use.
pub fn vnc_image() -> Result<String> {
    static TAG: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    cached(&TAG, || {
        if !Path::new(XTIGERVNC).exists() {
            return Err(format!(
                "{XTIGERVNC} is missing: install tigervnc-standalone-server (scripts/test does)"
            ));
        }
        let binary = httpd_binary()?;
        let mut ctx = Context::new()?;
        ctx.add_binary(&binary, Path::new("/flowcase-test-httpd"))?;
        ctx.add_binary(Path::new(XTIGERVNC), Path::new(XTIGERVNC))?;
        for bin in VNC_EXTRA_BINARIES {
            ctx.add_binary(Path::new(bin), Path::new(bin))?;
        }
        ctx.add_tree(Path::new(XKB_DATA))?;
        ctx.add_dir(Path::new("/tmp"), 0o1777)?;
        ctx.build("flowcase-test-vnc", &["/flowcase-test-httpd", "vnc"])
    })
}

/// The tag of the guacd double's image (the e2e crate's `flowcase-guacd-double` program at
/// `binary`, which the caller gets from cargo) FROM scratch, its entrypoint the program followed
/// by `args`: the guacd sidecar of the tests, listening on 4822 as `guacamole/guacd` does.
/// Programs of this workspace are hashed by content, so a rebuilt double makes a new tag.
pub fn guacd_double_image(binary: &Path, args: &[&str]) -> Result<String> {
    let mut ctx = Context::new()?;
    let inside = Path::new("/flowcase-guacd-double");
    ctx.add_binary(binary, inside)?;
    let mut entrypoint = vec!["/flowcase-guacd-double"];
    entrypoint.extend_from_slice(args);
    ctx.build("flowcase-test-guacd", &entrypoint)
}

fn cached(
    cell: &'static OnceLock<Mutex<Option<String>>>,
    build: impl FnOnce() -> Result<String>,
) -> Result<String> {
    let slot = cell.get_or_init(|| Mutex::new(None));
    // One build per process even when many tests ask at once; a failed build is retried.
    let mut guard = slot
        .lock()
        .map_err(|_| "image cache lock poisoned".to_owned())?;
    if let Some(tag) = guard.as_ref() {
        return Ok(tag.clone());
    }
    let tag = build()?;
    *guard = Some(tag.clone());
    Ok(tag)
}

/// The compiled server binary, compiled with `rustc` when its sources changed.
pub fn httpd_binary() -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let main = src.join("bin/flowcase-test-httpd/main.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = run(Command::new(&rustc).arg("-vV"))?;
    let mut hash = Sha256::new();
    hash.update(version.as_bytes());
    for file in [&main, &src.join("des.rs")] {
        hash.update(std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?);
    }
    let dir = target_dir().join("flowcase-test-images");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = dir.join(format!("{HTTPD_NAME}-{}", short_hex(&hash.finalize())));
    if out.exists() {
        return Ok(out);
    }
    // Compile next to the target and rename, so concurrent test processes never run a half
    // written file.
    let tmp = dir.join(format!("{HTTPD_NAME}.{}.tmp", std::process::id()));
    run(Command::new(&rustc)
        .args(["--edition", "2024", "--crate-type", "bin", "--crate-name"])
        .arg(HTTPD_NAME.replace('-', "_"))
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "debuginfo=0",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(&tmp)
        .arg(&main))?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A docker build context being assembled in a temporary directory, and the hash of what went
/// in (paths, modes and contents; system files by size and mtime, which is cheap and changes
/// whenever the package does).
struct Context {
    dir: TempDir,
    hash: Sha256,
    copied: BTreeSet<PathBuf>,
}

impl Context {
    fn new() -> Result<Self> {
        Ok(Self {
            dir: TempDir::new()?,
            hash: Sha256::new(),
            copied: BTreeSet::new(),
        })
    }

    fn dest(&self, image_path: &Path) -> PathBuf {
        self.dir
            .0
            .join("root")
            .join(image_path.strip_prefix("/").unwrap_or(image_path))
    }

    /// Copies a file (following symlinks) to `image_path`.
    fn add_file(&mut self, host: &Path, image_path: &Path, by_content: bool) -> Result<()> {
        if !self.copied.insert(image_path.to_owned()) {
            return Ok(());
        }
        let dest = self.dest(image_path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(host, &dest).map_err(|e| format!("copy {}: {e}", host.display()))?;
        let meta = std::fs::metadata(host).map_err(|e| format!("{}: {e}", host.display()))?;
        self.hash.update(image_path.as_os_str().as_encoded_bytes());
        self.hash.update(meta.mode().to_le_bytes());
        if by_content {
            self.hash
                .update(std::fs::read(host).map_err(|e| format!("{}: {e}", host.display()))?);
        } else {
            self.hash.update(meta.len().to_le_bytes());
            self.hash.update(meta.mtime().to_le_bytes());
        }
        Ok(())
    }

    /// Copies an executable and every shared library `ldd` names for it (the loader included),
    /// each to the path it has on the host.
    fn add_binary(&mut self, host: &Path, image_path: &Path) -> Result<()> {
        let ours = host.starts_with(target_dir());
        self.add_file(host, image_path, ours)?;
        let listing = run(Command::new("ldd").arg(host))?;
        for line in listing.lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"; vdso has no path.
            let Some(path) = line
                .split_whitespace()
                .find(|word| word.starts_with('/'))
                .map(Path::new)
            else {
                continue;
            };
            self.add_file(path, path, false)?;
        }
        Ok(())
    }

    fn add_tree(&mut self, host: &Path) -> Result<()> {
        let entries = std::fs::read_dir(host).map_err(|e| format!("{}: {e}", host.display()))?;
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            // Symlinks inside the tree are followed: the image gets plain copies.
            if path.is_dir() {
                self.add_tree(&path)?;
            } else if path.is_file() {
                self.add_file(&path, &path, false)?;
            }
        }
        Ok(())
    }

    fn add_dir(&mut self, image_path: &Path, mode: u32) -> Result<()> {
        let dest = self.dest(image_path);
        std::fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        self.hash.update(image_path.as_os_str().as_encoded_bytes());
        self.hash.update(mode.to_le_bytes());
        Ok(())
    }

    /// Builds the image unless one with the same content hash exists; returns its tag.
    fn build(mut self, name: &str, entrypoint: &[&str]) -> Result<String> {
        let quoted: Vec<String> = entrypoint.iter().map(|a| format!("{a:?}")).collect();
        let dockerfile = format!(
            "FROM scratch\nCOPY root/ /\nLABEL {IMAGE_LABEL}=\"{name}\"\nENTRYPOINT [{}]\n",
            quoted.join(", ")
        );
        self.hash.update(dockerfile.as_bytes());
        let tag = format!("{name}:{}", short_hex(&self.hash.finalize_reset()));
        if Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", &tag])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(tag);
        }
        let file = self.dir.0.join("Dockerfile");
        std::fs::write(&file, dockerfile).map_err(|e| format!("{}: {e}", file.display()))?;
        run(Command::new("docker")
            .args(["build", "--quiet", "--tag", &tag])
            .arg(&self.dir.0))?;
        Ok(tag)
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let base = target_dir().join("flowcase-test-images");
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("ctx-{}-{nonce}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let output = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn short_hex(bytes: &[u8]) -> String {
    bytes[..8].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

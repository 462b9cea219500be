//! `package` determinism and `package.verify` against a corpus of malicious archives.

use std::io::{Read, Write};
use std::path::Path;

use orch_delivery::errors::VerifyProblem;
use orch_delivery::{VerifyError, verify_archive};
use sha2::{Digest, Sha256};

use crate::common::{factory_error, run_phase, run_phase_env, with, write};

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "services/api/app.py", "print('hi')\n");
    write(root, "services/api/Dockerfile", "FROM scratch\n");
    write(root, "services/web/index.js", "console.log(1)\n");
    write(root, "bin/run.sh", "#!/bin/sh\necho run\n");
    write(root, "docker-compose.yml", "services: {}\n");
    write(root, "services/api/.git/HEAD", "ref: x\n");
    std::fs::create_dir_all(root.join("services/empty")).unwrap();
    set_mode(&root.join("bin/run.sh"), 0o700);
    set_mode(&root.join("services/api/app.py"), 0o600);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One entry: (path, type, mode, uid, gid, mtime, user name, size).
type Listed = (String, char, u32, u64, u64, u64, String, u64);

/// The entries of a tar.gz.
fn listing(path: &Path) -> Vec<Listed> {
    let f = std::fs::File::open(path).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                char::from(h.entry_type().as_byte()),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                String::from_utf8_lossy(h.username_bytes().unwrap_or_default()).into_owned(),
                h.size().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn same_input_same_bytes() {
    let dir = tree();
    let base = dir.path();
    let run1 = tempfile::tempdir().unwrap();
    let run2 = tempfile::tempdir().unwrap();
    let table = || with("paths = [\"services\", \"bin\", \"docker-compose.yml\"]");
    let first = run_phase("package", table(), base, run1.path(), &[], &[])
        .await
        .ok();

    // Touch every file, change a non-exec mode: nothing that reaches the archive changes.
    for f in ["services/api/app.py", "services/web/index.js", "bin/run.sh"] {
        let file = std::fs::File::options()
            .append(true)
            .open(base.join(f))
            .unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
            .unwrap();
    }
    set_mode(&base.join("services/api/app.py"), 0o640);
    let second = run_phase("package", table(), base, run2.path(), &[], &[])
        .await
        .ok();

    let a = run1.path().join("package.tar.gz");
    let b = run2.path().join("package.tar.gz");
    assert_eq!(first.outputs["path"], a.display().to_string());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(first.outputs["sha256"], second.outputs["sha256"]);
    assert_eq!(first.outputs["sha256"], sha256_file(&a));
    assert_eq!(first.outputs["files"], "5");
    let art = &first.artifacts[0];
    assert_eq!(art.kind, "archive");
    assert_eq!(
        art.digest.as_deref(),
        Some(&*format!("sha256:{}", sha256_file(&a)))
    );
    assert_eq!(art.size, Some(std::fs::metadata(&a).unwrap().len()));

    // The gzip header carries no time and no name.
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(&bytes[..4], &[0x1f, 0x8b, 8, 0], "no FNAME flag");
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "mtime 0");
    assert_eq!(bytes[9], 255, "OS unknown");

    let entries = listing(&a);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "MANIFEST.sha256",
            "bin/",
            "bin/run.sh",
            "docker-compose.yml",
            "services/",
            "services/api/",
            "services/api/Dockerfile",
            "services/api/app.py",
            "services/empty/",
            "services/web/",
            "services/web/index.js",
        ]
    );
    for (name, kind, mode, uid, gid, mtime, user, _) in &entries {
        let expected = if *kind == '5' || name == "bin/run.sh" {
            0o755
        } else {
            0o644
        };
        assert_eq!(*mode, expected, "{name}");
        assert_eq!((*uid, *gid, *mtime, user.as_str()), (0, 0, 0, ""), "{name}");
    }

    // The manifest is sha256sum's format.
    let mut manifest = String::new();
    let f = std::fs::File::open(&a).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    archive
        .entries()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let api = sha256_file(&base.join("services/api/app.py"));
    assert!(
        manifest.contains(&format!("{api}  services/api/app.py\n")),
        "{manifest}"
    );
    assert_eq!(manifest.lines().count(), 5);

    // GNU tar reads it and `sha256sum -c` accepts the manifest in the extracted tree.
    let x = tempfile::tempdir().unwrap();
    let tar_ok = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&a)
        .arg("-C")
        .arg(x.path())
        .status();
    if let Ok(status) = tar_ok {
        assert!(status.success(), "tar -xzf failed");
        let check = std::process::Command::new("sha256sum")
            .args(["--strict", "-c", "MANIFEST.sha256"])
            .current_dir(x.path())
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        assert!(x.path().join("services/empty").is_dir());
    } else {
        eprintln!("skipping the GNU tar cross-check: no `tar` on this machine");
    }

    // And it verifies, through the function and through the phase.
    assert_eq!(verify_archive(&a).unwrap().files, 5);
    let out = run_phase(
        "package.verify",
        with(&format!("archive = {:?}", a.display().to_string())),
        base,
        run1.path(),
        &[],
        &[],
    )
    .await
    .ok();
    assert_eq!(out.outputs["files"], "5");
}

#[tokio::test]
async fn source_date_epoch_sets_every_mtime() {
    let dir = tree();
    let run = tempfile::tempdir().unwrap();
    run_phase_env(
        "package",
        with("paths = [\"bin\"]\noutput = \"dist/bin.tar.gz\""),
        dir.path(),
        run.path(),
        &[],
        &[],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    )
    .await
    .ok();
    let entries = listing(&dir.path().join("dist/bin.tar.gz"));
    assert!(entries.iter().all(|e| e.5 == 1_700_000_000), "{entries:?}");
    let e = run_phase_env(
        "package",
        with("paths = [\"bin\"]"),
        dir.path(),
        run.path(),
        &[],
        &[],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    )
    .await
    .err();
    assert!(e.contains("SOURCE_DATE_EPOCH"), "{e}");
}

#[tokio::test]
async fn what_is_left_out() {
    let dir = tree();
    let base = dir.path();
    std::os::unix::fs::symlink("/etc/passwd", base.join("services/passwd")).unwrap();
    write(base, "services/web/debug.log", "x\n");
    // The run's state directory inside a packaged directory.
    let run_dir = base.join("services/state/runs/r1");
    write(base, "services/state/runs/r1/run.json", "{}");
    let out = run_phase(
        "package",
        with("paths = [\"services\"]\nexclude = [\"*.log\"]"),
        base,
        &run_dir,
        &[],
        &[],
    )
    .await;
    let log = out.log.clone();
    let out = out.ok();
    let names: Vec<String> = listing(Path::new(&out.outputs["path"]))
        .into_iter()
        .map(|e| e.0)
        .collect();
    for gone in [
        "services/passwd",
        "services/web/debug.log",
        "services/api/.git/HEAD",
    ] {
        assert!(!names.iter().any(|n| n == gone), "{gone} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("services/state")),
        "{names:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("left out symlink services/passwd")),
        "{log:?}"
    );
}

#[tokio::test]
async fn refused_paths() {
    let outer = tempfile::tempdir().unwrap();
    let base = outer.path().join("project");
    write(&base, "a.txt", "a\n");
    write(outer.path(), "secret.txt", "s\n");
    write(&base, "MANIFEST.sha256", "x\n");
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), base.join("link.txt")).unwrap();
    let run = tempfile::tempdir().unwrap();
    for (paths, needle) in [
        ("[\"../secret.txt\"]", "outside the pipeline directory"),
        ("[\"link.txt\"]", "outside the pipeline directory"),
        ("[\"nope\"]", "does not exist"),
        ("[\".\"]", "reserved"),
    ] {
        let e = run_phase(
            "package",
            with(&format!("paths = {paths}")),
            &base,
            run.path(),
            &[],
            &[],
        )
        .await
        .err();
        assert!(e.contains(needle), "{paths}: {e}");
    }
    let e = factory_error("package", with("paths = []"), &[]);
    assert!(e.contains("`paths` is empty"), "{e}");
    // Nothing half-written is left behind.
    let left: Vec<_> = std::fs::read_dir(run.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

// ---- malicious archives, built with the tar crate's raw header APIs ----

enum Raw<'a> {
    File(&'a [u8], &'a [u8]),
    Dir(&'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
    Hardlink(&'a [u8], &'a [u8]),
    Special(&'a [u8], tar::EntryType),
    LongName(&'a [u8], &'a [u8]),
    PaxPath(&'a [u8], &'a [u8]),
}

fn raw_header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name);
    h
}

fn append(b: &mut tar::Builder<Vec<u8>>, mut h: tar::Header, data: &[u8]) {
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn manifest_for(files: &[(&str, &[u8])]) -> Vec<u8> {
    files
        .iter()
        .map(|(n, d)| {
            let hex: String = Sha256::digest(d)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{hex}  {n}\n")
        })
        .collect::<String>()
        .into_bytes()
}

/// Writes a gzipped tar of raw entries and returns its path.
fn build(dir: &Path, name: &str, entries: &[Raw<'_>]) -> std::path::PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Raw::File(n, d) => append(
                &mut b,
                raw_header(n, tar::EntryType::Regular, d.len() as u64),
                d,
            ),
            Raw::Dir(n) => append(&mut b, raw_header(n, tar::EntryType::Directory, 0), b""),
            Raw::Symlink(n, t) | Raw::Hardlink(n, t) => {
                let kind = if matches!(e, Raw::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = raw_header(n, kind, 0);
                let old = h.as_old_mut();
                old.linkname = [0; 100];
                old.linkname[..t.len()].copy_from_slice(t);
                append(&mut b, h, b"");
            }
            Raw::Special(n, kind) => append(&mut b, raw_header(n, *kind, 0), b""),
            Raw::LongName(n, d) => {
                let mut long = n.to_vec();
                long.push(0);
                append(
                    &mut b,
                    raw_header(
                        b"././@LongLink",
                        tar::EntryType::GNULongName,
                        long.len() as u64,
                    ),
                    &long,
                );
                append(
                    &mut b,
                    raw_header(b"short", tar::EntryType::Regular, d.len() as u64),
                    d,
                );
            }
            Raw::PaxPath(n, d) => {
                let body = format!(" path={}\n", String::from_utf8_lossy(n));
                // A record is `LEN path=VALUE\n` where LEN counts its own digits too.
                let mut len = body.len() + 1;
                while len.to_string().len() + body.len() != len {
                    len = len.to_string().len() + body.len();
                }
                let record = format!("{len}{body}");
                append(
                    &mut b,
                    raw_header(b"pax", tar::EntryType::XHeader, record.len() as u64),
                    record.as_bytes(),
                );
                append(
                    &mut b,
                    raw_header(b"innocent", tar::EntryType::Regular, d.len() as u64),
                    d,
                );
            }
        }
    }
    let tar_bytes = b.into_inner().unwrap();
    let path = dir.join(name);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(&tar_bytes).unwrap();
    gz.finish().unwrap();
    path
}

fn rejected(path: &Path) -> Vec<VerifyProblem> {
    match verify_archive(path) {
        Err(VerifyError::Rejected { problems, .. }) => problems,
        other => panic!("{} was not rejected: {other:?}", path.display()),
    }
}

#[test]
fn malicious_archives_are_rejected_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok: &[u8] = b"fine\n";
    let m = manifest_for(&[("ok.txt", ok)]);
    let cases: Vec<(&str, Vec<Raw<'_>>, &str)> = vec![
        (
            "dotdot",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::File(b"../evil.sh", b"x")],
            "`../evil.sh` has a `..` component",
        ),
        (
            "dotdot-inner",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::File(b"a/../../x", b"x")],
            "has a `..` component",
        ),
        (
            "absolute",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::File(b"/etc/cron.d/x", b"x")],
            "`/etc/cron.d/x` has an absolute path",
        ),
        (
            "symlink-escape",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::Symlink(b"dir/link", b"../../etc")],
            "link `dir/link` points outside the archive: `../../etc`",
        ),
        (
            "symlink-absolute",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::Symlink(b"shadow", b"/etc/shadow")],
            "points outside the archive: `/etc/shadow`",
        ),
        (
            "hardlink-escape",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::Hardlink(b"h", b"../outside")],
            "link `h` points outside the archive",
        ),
        (
            "symlink-then-write-through",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"ok.txt", ok),
                Raw::Symlink(b"sub", b"."),
                Raw::File(b"sub/ok.txt", b"overwrite"),
            ],
            "link `sub` -> `.` is not in the manifest",
        ),
        (
            "char-device",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::Special(b"null", tar::EntryType::Char)],
            "`null` is a character device",
        ),
        (
            "block-device",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::Special(b"sda", tar::EntryType::Block)],
            "`sda` is a block device",
        ),
        (
            "fifo",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::Special(b"pipe", tar::EntryType::Fifo)],
            "`pipe` is a fifo",
        ),
        (
            "gnu-long-name-traversal",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"ok.txt", ok),
                Raw::LongName(
                    b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/../../../../tmp/x",
                    b"x",
                ),
            ],
            "has a `..` component",
        ),
        (
            "pax-path-traversal",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::PaxPath(b"../../pax-evil", b"x")],
            "`../../pax-evil` has a `..` component",
        ),
        (
            "duplicate",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::File(b"./ok.txt", b"evil")],
            "`ok.txt` appears more than once",
        ),
        (
            "extra-file",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", ok), Raw::File(b"bonus.sh", b"x")],
            "`bonus.sh` is in the archive but not in the manifest",
        ),
        (
            "missing-file",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::Dir(b"empty/")],
            "`ok.txt` is in the manifest but not in the archive",
        ),
        (
            "tampered",
            vec![Raw::File(b"MANIFEST.sha256", &m), Raw::File(b"ok.txt", b"tampered\n")],
            "`ok.txt` does not match the manifest",
        ),
        (
            "no-manifest",
            vec![Raw::File(b"ok.txt", ok)],
            "the archive has no MANIFEST.sha256",
        ),
        (
            "manifest-traversal",
            vec![
                Raw::File(
                    b"MANIFEST.sha256",
                    b"0000000000000000000000000000000000000000000000000000000000000000  ../etc/passwd\n",
                ),
            ],
            "MANIFEST.sha256 line 1",
        ),
        (
            "manifest-garbage",
            vec![Raw::File(b"MANIFEST.sha256", b"not a manifest\n")],
            "MANIFEST.sha256 line 1",
        ),
    ];
    for (name, entries, needle) in cases {
        let path = build(d, &format!("{name}.tar.gz"), &entries);
        let problems = rejected(&path);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains(needle)),
            "{name}: expected `{needle}` in {text:#?}"
        );
        // The error message names the archive and every reason.
        let message = verify_archive(&path).unwrap_err().to_string();
        assert!(
            message.contains(&format!("{name}.tar.gz")) && message.contains(needle),
            "{message}"
        );
    }
    // The well-formed control passes.
    let good = build(
        d,
        "good.tar.gz",
        &[
            Raw::File(b"MANIFEST.sha256", &m),
            Raw::Dir(b"d/"),
            Raw::File(b"ok.txt", ok),
        ],
    );
    assert_eq!(verify_archive(&good).unwrap().files, 1);
    // Nothing was extracted anywhere.
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".tar.gz")), "{names:?}");
}

#[tokio::test]
async fn the_verify_phase_fails_naming_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    build(
        dir.path(),
        "bad.tar.gz",
        &[Raw::File(b"MANIFEST.sha256", b""), Raw::File(b"../x", b"x")],
    );
    let ran = run_phase(
        "package.verify",
        with("archive = \"bad.tar.gz\""),
        dir.path(),
        dir.path(),
        &[],
        &[],
    )
    .await;
    assert!(
        ran.log
            .iter()
            .any(|l| l.contains("`../x` has a `..` component")),
        "{:?}",
        ran.log
    );
    let e = ran.err();
    assert!(
        e.contains("bad.tar.gz is rejected") && e.contains("`../x`"),
        "{e}"
    );
    // Not an archive at all.
    write(dir.path(), "junk.tar.gz", "junk");
    let e = verify_archive(&dir.path().join("junk.tar.gz")).unwrap_err();
    assert!(matches!(e, VerifyError::Read { .. }), "{e:?}");
}

#[tokio::test]
async fn a_cancelled_package_writes_nothing() {
    let dir = tree();
    let r =
        crate::common::run_cancelled("package", with("paths = [\"services\"]"), dir.path()).await;
    assert_eq!(r, Err(orch_core::PhaseError::Cancelled));
    assert!(!dir.path().join(".orch").exists(), "nothing written");
}

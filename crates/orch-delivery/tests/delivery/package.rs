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
    /// A PAX header with these records, then a regular entry (name, data).
    Pax(&'a [(&'a str, &'a [u8])], &'a [u8], &'a [u8]),
    /// A PAX global header with these records.
    Global(&'a [(&'a str, &'a [u8])]),
    /// A GNU long name, a PAX `path`, then a regular entry with that data.
    LongAndPax(&'a [u8], &'a [u8], &'a [u8]),
    /// A directory entry that carries data.
    DirWithData(&'a [u8], &'a [u8]),
    /// Raw bytes after the end-of-archive blocks.
    Tail(&'a [u8]),
}

/// One PAX record: `LEN KEY=VALUE\n`, where LEN counts its own digits too.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn pax_header(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, records: &[(&str, &[u8])]) {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    append(b, raw_header(b"pax", kind, data.len() as u64), &data);
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
    let mut tail = Vec::new();
    for e in entries {
        match e {
            Raw::Pax(records, n, d) => {
                pax_header(&mut b, tar::EntryType::XHeader, records);
                append(
                    &mut b,
                    raw_header(n, tar::EntryType::Regular, d.len() as u64),
                    d,
                );
            }
            Raw::Global(records) => pax_header(&mut b, tar::EntryType::XGlobalHeader, records),
            Raw::LongAndPax(long, pax, d) => {
                let mut l = long.to_vec();
                l.push(0);
                append(
                    &mut b,
                    raw_header(
                        b"././@LongLink",
                        tar::EntryType::GNULongName,
                        l.len() as u64,
                    ),
                    &l,
                );
                pax_header(&mut b, tar::EntryType::XHeader, &[("path", pax)]);
                append(
                    &mut b,
                    raw_header(b"short", tar::EntryType::Regular, d.len() as u64),
                    d,
                );
            }
            Raw::DirWithData(n, d) => append(
                &mut b,
                raw_header(n, tar::EntryType::Directory, d.len() as u64),
                d,
            ),
            Raw::Tail(bytes) => tail.extend_from_slice(bytes),
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
            Raw::Special(n, kind) => {
                let mut h = raw_header(n, *kind, 0);
                if let Some(gnu) = h.as_gnu_mut() {
                    // A GNU sparse entry of real size 0 with no blocks.
                    gnu.realsize = *b"00000000000\0";
                    for s in &mut gnu.sparse {
                        s.offset = *b"00000000000\0";
                        s.numbytes = *b"00000000000\0";
                    }
                }
                append(&mut b, h, b"")
            }
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
    let mut tar_bytes = b.into_inner().unwrap();
    tar_bytes.extend_from_slice(&tail);
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

/// An archive holding one entry `hidden.sh`, as raw tar bytes (with its end blocks).
fn hidden_archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append(
        &mut b,
        raw_header(b"hidden.sh", tar::EntryType::Regular, 2),
        b"x\n",
    );
    b.into_inner().unwrap()
}

#[test]
fn archives_that_extract_to_something_else_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok: &[u8] = b"fine\n";
    let m = manifest_for(&[("src/a.txt", ok)]);
    let hidden = hidden_archive();
    let cases: Vec<(&str, Vec<Raw<'_>>, &str)> = vec![
        (
            "pax-sparse-1.0",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::Pax(
                    &[
                        ("GNU.sparse.major", b"1"),
                        ("GNU.sparse.minor", b"0"),
                        ("GNU.sparse.name", b"../../evil"),
                        ("GNU.sparse.realsize", b"5"),
                    ],
                    b"src/a.txt",
                    ok,
                ),
            ],
            "has the pax key `GNU.sparse.major`",
        ),
        (
            "pax-sparse-0.1",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::Pax(
                    &[
                        ("GNU.sparse.numblocks", b"1"),
                        ("GNU.sparse.map", b"0,5"),
                        ("GNU.sparse.size", b"9"),
                    ],
                    b"src/a.txt",
                    ok,
                ),
            ],
            "has the pax key `GNU.sparse.numblocks`",
        ),
        (
            "gnu-sparse-type",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt", ok),
                Raw::Special(b"s", tar::EntryType::GNUSparse),
            ],
            "`s` is a sparse file",
        ),
        (
            "xattr",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::Pax(
                    &[("SCHILY.xattr.security.capability", b"\x01\x00")],
                    b"src/a.txt",
                    ok,
                ),
            ],
            "has the pax key `SCHILY.xattr.security.capability`",
        ),
        (
            "pax-key-twice",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::Pax(&[("path", b"src/a.txt"), ("path", b"../x")], b"short", ok),
            ],
            "the key `path` appears twice",
        ),
        (
            "global-path",
            vec![
                Raw::Global(&[("path", b"../evil")]),
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt", ok),
            ],
            "`(global header)` has the pax key `path`",
        ),
        (
            "long-name-and-pax-path",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::LongAndPax(b"src/a.txt", b"src/b.txt", ok),
            ],
            "its `path` disagrees with the entry's GNU long name",
        ),
        (
            "file-then-directory",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt", ok),
                Raw::Dir(b"src/a.txt/"),
            ],
            "entry `src/a.txt` makes `src/a.txt` both a file and a directory",
        ),
        (
            "file-then-child",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt", ok),
                Raw::File(b"src/a.txt/x", b"x"),
            ],
            "entry `src/a.txt/x` makes `src/a.txt` both a file and a directory",
        ),
        (
            "child-then-file",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt/x", b"x"),
                Raw::File(b"src/a.txt", ok),
            ],
            "entry `src/a.txt` makes `src/a.txt` both a file and a directory",
        ),
        (
            "link-then-child",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt", ok),
                Raw::Symlink(b"l", b"src"),
                Raw::File(b"l/x", b"x"),
            ],
            "entry `l/x` makes `l` both a file and a directory",
        ),
        (
            "directory-with-data",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt", ok),
                Raw::DirWithData(b"d/", b"hidden"),
            ],
            "`d` is a directory with 6 bytes of data",
        ),
        (
            "file-named-like-a-directory",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt", ok),
                Raw::File(b"x/", b""),
            ],
            "a name ending in `/` on an entry that is not a directory",
        ),
        (
            "control-characters",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt", ok),
                Raw::File(b"a\x1b[2Jb", b""),
            ],
            "entry `a\\x1b[2Jb` has an invalid path: a control character in the name",
        ),
        (
            "nul-in-long-name",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::LongName(b"src/a.txt\0../../x", ok),
            ],
            "a control character in the name",
        ),
        (
            "entries-after-the-end",
            vec![
                Raw::File(b"MANIFEST.sha256", &m),
                Raw::File(b"src/a.txt", ok),
                Raw::Tail(&hidden),
            ],
            "data follows the end of the archive",
        ),
    ];
    for (name, entries, needle) in cases {
        let path = build(d, &format!("{name}.tar.gz"), &entries);
        let text: Vec<String> = rejected(&path).iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains(needle)),
            "{name}: expected `{needle}` in {text:#?}"
        );
    }

    // Two gzip members: `gzip -d` (and `tar -xzf`) reads both, so the second one's
    // entries count, past the first one's end of archive.
    let good = build(
        d,
        "good.tar.gz",
        &[
            Raw::File(b"MANIFEST.sha256", &m),
            Raw::File(b"src/a.txt", ok),
        ],
    );
    assert_eq!(verify_archive(&good).unwrap().files, 1);
    let mut two = std::fs::read(&good).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&hidden).unwrap();
    two.extend_from_slice(&gz.finish().unwrap());
    let concatenated = d.join("concatenated.tar.gz");
    std::fs::write(&concatenated, two).unwrap();
    let text: Vec<String> = rejected(&concatenated)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(text, ["data follows the end of the archive"]);

    // The same file twice as directory entries, and a pax header of allowed keys, pass.
    let fine = build(
        d,
        "fine.tar.gz",
        &[
            Raw::Global(&[("comment", b"0123abcd")]),
            Raw::File(b"MANIFEST.sha256", &m),
            Raw::Dir(b"src/"),
            Raw::Dir(b"./src"),
            Raw::Pax(
                &[("path", b"src/a.txt"), ("mtime", b"1.5"), ("uname", b"me")],
                b"short",
                ok,
            ),
        ],
    );
    assert_eq!(verify_archive(&fine).unwrap().files, 1);
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

mod props {
    //! The verifier against a model: an archive of files and directories with a correct
    //! manifest verifies exactly when no path is both a file and a directory and no file
    //! repeats.

    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    use orch_delivery::verify::verify_reader;

    fn entries() -> impl Strategy<Value = Vec<(String, bool, Vec<u8>)>> {
        prop::collection::vec(
            (
                prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4),
                any::<bool>(),
                prop::collection::vec(any::<u8>(), 0..8),
            )
                .prop_map(|(parts, dir, data)| (parts.join("/"), dir, data)),
            1..8,
        )
    }

    proptest! {
        #[test]
        fn verifies_exactly_the_archives_that_extract_to_what_they_list(entries in entries()) {
            let mut files = BTreeSet::new();
            let mut dirs = BTreeSet::new();
            let mut repeated = false;
            let mut manifest = String::new();
            for (name, dir, data) in &entries {
                let parts: Vec<&str> = name.split('/').collect();
                for i in 1..parts.len() {
                    dirs.insert(parts[..i].join("/"));
                }
                if *dir {
                    dirs.insert(name.clone());
                } else {
                    repeated |= !files.insert(name.clone());
                    let hex: String = Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect();
                    manifest.push_str(&format!("{hex}  {name}\n"));
                }
            }
            let conflict = files.iter().any(|f| dirs.contains(f));
            let mut b = tar::Builder::new(Vec::new());
            let mut add = |name: &str, kind: tar::EntryType, data: &[u8]| {
                let mut h = tar::Header::new_gnu();
                h.set_path(name).unwrap();
                h.set_entry_type(kind);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append(&h, data).unwrap();
            };
            add("MANIFEST.sha256", tar::EntryType::Regular, manifest.as_bytes());
            for (name, dir, data) in &entries {
                if *dir {
                    add(&format!("{name}/"), tar::EntryType::Directory, b"");
                } else {
                    add(name, tar::EntryType::Regular, data);
                }
            }
            let bytes = b.into_inner().unwrap();
            let result = verify_reader(&bytes[..], "model.tar".as_ref());
            prop_assert_eq!(result.is_ok(), !conflict && !repeated, "{:?}", result);
            if let Ok(report) = result {
                prop_assert_eq!(report.files, files.len());
            }
        }
    }
}

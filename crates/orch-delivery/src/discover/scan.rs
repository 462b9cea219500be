//! Small text scanners: manifests, Dockerfile ports, env files, env reads and port defaults
//! in source code. No regular expressions: each pattern is a literal token followed by a
//! number or a name.

/// The language a manifest file name implies.
pub(crate) fn manifest_language(name: &str) -> Option<&'static str> {
    match name {
        "package.json" => Some("node"),
        "requirements.txt" | "pyproject.toml" | "setup.py" | "Pipfile" => Some("python"),
        "Cargo.toml" => Some("rust"),
        "go.mod" => Some("go"),
        "pom.xml" | "build.gradle" | "build.gradle.kts" => Some("java"),
        _ => None,
    }
}

/// Whether a file name is a manifest that makes its directory a service.
pub(crate) fn is_manifest(name: &str) -> bool {
    manifest_language(name).is_some() || super::model::is_dockerfile_name(name)
}

/// Whether `name` is a Compose file by name: `compose*.y*ml` or `docker-compose*.y*ml`.
pub(crate) fn is_compose_name(name: &str) -> bool {
    (name.starts_with("compose") || name.starts_with("docker-compose"))
        && (name.ends_with(".yml") || name.ends_with(".yaml"))
}

/// Whether `name` is a YAML file.
pub(crate) fn is_yaml_name(name: &str) -> bool {
    name.ends_with(".yml") || name.ends_with(".yaml")
}

/// Whether a YAML text has a top-level `services:` line (a cheap pre-filter before parsing
/// a file that might be a Compose file by content).
pub(crate) fn has_top_level_services(text: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix("services")
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })
}

/// Whether a file name is an env file: `.env`, `.env.*`, `*.env`, `env.example` and kin.
pub(crate) fn is_env_file_name(name: &str) -> bool {
    name == ".env"
        || name.starts_with(".env.")
        || (name.ends_with(".env") && name.len() > 4)
        || matches!(
            name,
            "env.example" | "env.sample" | "env.template" | "env.dist"
        )
}

/// Whether an env file is a template (an example to copy) rather than a real env file.
pub(crate) fn is_env_template_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["example", "template", "sample", "dist", "default", "tmpl"]
        .iter()
        .any(|w| lower.contains(w))
}

/// Variable names defined in an env file, with their lines. Values are never returned.
pub(crate) fn env_file_names(text: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        let rest = line[name.len()..].trim_start();
        if is_env_name(&name) && (rest.starts_with('=') || rest.is_empty()) {
            out.push((name, i as u64 + 1));
        }
    }
    out
}

/// Whether `s` is a plausible environment variable name.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn take_ident(s: &str) -> &str {
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(s.len(), |(i, _)| i);
    &s[..end]
}

fn take_number(s: &str) -> Option<u16> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || s[digits.len()..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return None;
    }
    digits.parse::<u16>().ok().filter(|p| *p > 0)
}

/// A quoted name right at the start of `s` (after spaces): `"NAME"` or `'NAME'`.
fn quoted_name(s: &str) -> Option<&str> {
    let s = s.trim_start();
    let quote = s.chars().next().filter(|c| matches!(c, '"' | '\'' | '`'))?;
    let inner = &s[1..];
    let name = take_ident(inner);
    (inner[name.len()..].starts_with(quote) && is_env_name(name)).then_some(name)
}

/// Source extensions scanned for env reads and port defaults.
pub(crate) fn is_scanned_source(name: &str) -> bool {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    matches!(
        ext,
        "js" | "mjs"
            | "cjs"
            | "jsx"
            | "ts"
            | "mts"
            | "cts"
            | "tsx"
            | "py"
            | "go"
            | "rs"
            | "java"
            | "kt"
    )
}

/// Environment variables read by source code: `process.env.X`, `process.env["X"]`,
/// `getenv("X")`, `Getenv("X")`, `LookupEnv("X")`, `environ["X"]`, `environ.get("X")`,
/// `env::var("X")`, `env::var_os("X")`.
pub(crate) fn env_reads(text: &str) -> Vec<(String, u64)> {
    const CALLS: [&str; 8] = [
        "process.env[",
        "getenv(",
        "Getenv(",
        "LookupEnv(",
        "environ.get(",
        "environ[",
        "env::var(",
        "env::var_os(",
    ];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        for (pos, _) in line.match_indices("process.env.") {
            let name = take_ident(&line[pos + "process.env.".len()..]);
            if is_env_name(name) {
                out.push((name.to_owned(), n));
            }
        }
        for call in CALLS {
            for (pos, _) in line.match_indices(call) {
                if let Some(name) = quoted_name(&line[pos + call.len()..]) {
                    out.push((name.to_owned(), n));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Default ports in source code: `process.env.PORT || 3000`, `process.env.PORT ?? 3000`,
/// `getenv("PORT", 8000)`, `environ.get("PORT", "8000")`, `.listen(3000`.
pub(crate) fn source_port_defaults(text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for line in text.lines() {
        for token in [
            "process.env.PORT",
            "process.env[\"PORT\"]",
            "process.env['PORT']",
        ] {
            for (pos, _) in line.match_indices(token) {
                let rest = line[pos + token.len()..].trim_start();
                if let Some(rest) = rest.strip_prefix("||").or_else(|| rest.strip_prefix("??")) {
                    let rest = rest.trim_start().trim_start_matches(['"', '\'']);
                    out.extend(take_number(rest));
                }
            }
        }
        for call in ["getenv(", "environ.get("] {
            for (pos, _) in line.match_indices(call) {
                let rest = &line[pos + call.len()..];
                if quoted_name(rest) == Some("PORT") {
                    let after = rest.trim_start();
                    let after = &after["PORT".len() + 2..];
                    if let Some(value) = after.trim_start().strip_prefix(',') {
                        let value = value.trim_start().trim_start_matches(['"', '\'']);
                        out.extend(take_number(value));
                    }
                }
            }
        }
        for (pos, _) in line.match_indices(".listen(") {
            out.extend(take_number(line[pos + ".listen(".len()..].trim_start()));
        }
    }
    out
}

/// Ports a script or command line names: `PORT=3000`, `--port 3000`, `--port=3000`,
/// `--bind 0.0.0.0:8000`, `-b :8000`.
pub(crate) fn command_ports(cmd: &str) -> Vec<u16> {
    let words: Vec<&str> = cmd
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '[' | ']'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).copied().unwrap_or("");
        if let Some(v) = w.strip_prefix("PORT=") {
            out.extend(take_number(v));
        } else if let Some(v) = w.strip_prefix("--port=") {
            out.extend(take_number(v));
        } else if *w == "--port" {
            out.extend(take_number(next));
        } else if let Some(v) = w.strip_prefix("--bind=") {
            out.extend(bind_port(v));
        } else if *w == "--bind" || *w == "-b" {
            out.extend(bind_port(next));
        }
    }
    out
}

fn bind_port(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| take_number(p))
}

/// Ports a Dockerfile declares: `EXPOSE` (source `dockerfile-expose`), `ENV PORT`
/// (`dockerfile-env`) and `--port`/`--bind` in `CMD`/`ENTRYPOINT`/`RUN` (`dockerfile-cmd`).
pub(crate) fn dockerfile_ports(text: &str) -> Vec<(u16, String, &'static str)> {
    let mut out = Vec::new();
    // Join continuation lines so an instruction is one string.
    let mut joined = String::new();
    let mut instructions = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') && joined.is_empty() {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            joined.push_str(part);
            joined.push(' ');
        } else {
            joined.push_str(t);
            instructions.push(std::mem::take(&mut joined));
        }
    }
    if !joined.is_empty() {
        instructions.push(joined);
    }
    for ins in instructions {
        let (word, rest) = ins.split_once(char::is_whitespace).unwrap_or((&ins, ""));
        match word.to_ascii_uppercase().as_str() {
            "EXPOSE" => {
                for tok in rest.split_whitespace() {
                    let (port, proto) = tok.split_once('/').unwrap_or((tok, "tcp"));
                    if let Some(p) = take_number(port) {
                        out.push((p, proto.to_ascii_lowercase(), "dockerfile-expose"));
                    }
                }
            }
            "ENV" => {
                let rest = rest.trim();
                let value = rest
                    .strip_prefix("PORT=")
                    .or_else(|| rest.strip_prefix("PORT "))
                    .map(|v| v.trim_start().trim_start_matches(['"', '\'']));
                if let Some(p) = value.and_then(take_number) {
                    out.push((p, "tcp".to_owned(), "dockerfile-env"));
                }
                for w in rest.split_whitespace() {
                    if let Some(v) = w
                        .strip_prefix("PORT=")
                        .filter(|_| !rest.starts_with("PORT"))
                    {
                        out.extend(
                            take_number(v.trim_matches(['"', '\'']))
                                .map(|p| (p, "tcp".to_owned(), "dockerfile-env")),
                        );
                    }
                }
            }
            "CMD" | "ENTRYPOINT" | "RUN" => {
                for p in command_ports(rest) {
                    out.push((p, "tcp".to_owned(), "dockerfile-cmd"));
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether a path inside a service (relative, `/`-separated) is a test file.
pub(crate) fn is_test_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    let code = matches!(
        ext,
        "py" | "js"
            | "mjs"
            | "cjs"
            | "jsx"
            | "ts"
            | "mts"
            | "cts"
            | "tsx"
            | "go"
            | "rs"
            | "java"
            | "kt"
    );
    if !code {
        return false;
    }
    let in_test_dir = rel
        .split('/')
        .rev()
        .skip(1)
        .any(|d| matches!(d, "tests" | "test" | "__tests__" | "spec" | "specs"));
    let named = stem.starts_with("test_")
        || stem.ends_with("_test")
        || stem.ends_with(".test")
        || stem.ends_with(".spec")
        || stem.ends_with("Test")
        || stem.ends_with("Tests");
    (in_test_dir && (ext != "py" || stem != "__init__")) || named
}

/// The package name a manifest declares, or the reason it could not be read.
pub(crate) fn manifest_package_name(
    file_name: &str,
    text: &str,
) -> Result<Option<String>, (Option<u64>, String)> {
    match file_name {
        "package.json" => {
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| (Some(e.line() as u64), format!("invalid JSON: {e}")))?;
            Ok(v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        }
        "pyproject.toml" | "Cargo.toml" => {
            let v: toml::Table = toml::from_str(text).map_err(|e| {
                let line = e.span().map(|s| line_of(text, s.start));
                (line, format!("invalid TOML: {}", e.message()))
            })?;
            let name = ["project", "package"]
                .iter()
                .find_map(|t| v.get(*t).and_then(|p| p.get("name")))
                .or_else(|| {
                    v.get("tool")
                        .and_then(|t| t.get("poetry"))
                        .and_then(|p| p.get("name"))
                })
                .and_then(|n| n.as_str())
                .map(str::to_owned);
            Ok(name)
        }
        "go.mod" => Ok(text.lines().find_map(|l| {
            let module = l.trim().strip_prefix("module")?.trim().trim_matches('"');
            let mut parts = module.rsplit('/');
            let last = parts.next()?;
            // `example.com/x/v2` names `x`.
            let is_major = last.len() > 1
                && last.starts_with('v')
                && last[1..].chars().all(|c| c.is_ascii_digit());
            Some(if is_major { parts.next()? } else { last }.to_owned())
        })),
        "pom.xml" => {
            // The first `artifactId` outside `<parent>`.
            let without_parent = match (text.find("<parent>"), text.find("</parent>")) {
                (Some(a), Some(b)) if a < b => format!("{}{}", &text[..a], &text[b..]),
                _ => text.to_owned(),
            };
            Ok(without_parent
                .split("<artifactId>")
                .nth(1)
                .and_then(|rest| {
                    rest.split("</artifactId>")
                        .next()
                        .map(|s| s.trim().to_owned())
                }))
        }
        _ => Ok(None),
    }
}

/// The 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> u64 {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64
        + 1
}

/// Compose interpolations in a string: `(name, required)` for `${NAME}`, `${NAME:-x}`,
/// `${NAME:?err}`, `${NAME?err}`, `$NAME`; `$$` is an escaped dollar.
pub(crate) fn interpolations(s: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let name = take_ident(&s[i + 2..]);
                let after = &s[i + 2 + name.len()..];
                if is_env_name(name) {
                    let required = after.starts_with(":?") || after.starts_with('?');
                    out.push((name.to_owned(), required));
                }
                i += 2 + name.len();
            }
            Some(_) => {
                let name = take_ident(&s[i + 1..]);
                if is_env_name(name) {
                    out.push((name.to_owned(), false));
                }
                i += 1 + name.len().max(1);
            }
            None => i += 1,
        }
    }
    out
}

/// Replaces `${NAME:-default}`/`${NAME-default}` by the default and other `${...}` by
/// `${NAME}`, so a port string can be split on `:`. Returns the text and whether every
/// interpolation had a default.
pub(crate) fn resolve_defaults(s: &str) -> (String, bool) {
    let mut out = String::new();
    let mut all = true;
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let inner_start = &rest[start + 2..];
        let Some(end) = inner_start.find('}') else {
            out.push_str(&rest[start..]);
            return (out, false);
        };
        let inner = &inner_start[..end];
        let name = take_ident(inner);
        let op = &inner[name.len()..];
        if let Some(default) = op.strip_prefix(":-").or_else(|| op.strip_prefix('-')) {
            out.push_str(default);
        } else {
            all = false;
            out.push_str("${");
            out.push_str(name);
            out.push('}');
        }
        rest = &inner_start[end + 1..];
    }
    out.push_str(rest);
    (out, all)
}

/// Anchor names defined in a YAML text (`&name` followed by a space or the line end).
pub(crate) fn yaml_anchors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('#') {
            continue;
        }
        let b = line.as_bytes();
        for (pos, _) in line.match_indices('&') {
            let before_ok = pos == 0 || matches!(b[pos - 1], b' ' | b'\t' | b'[' | b',');
            let name: String = line[pos + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                .collect();
            let after = line[pos + 1 + name.len()..].chars().next();
            let after_ok = after.is_none_or(|c| c.is_whitespace());
            if before_ok && after_ok && !name.is_empty() {
                out.push(name);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_reads_find_names_in_several_languages() {
        let src = "const a = process.env.API_KEY;\nx = os.environ.get('DB_URL', 'x')\ny = os.getenv(\"REDIS\")\nos.Getenv(\"GO_VAR\")\nstd::env::var(\"RUST_VAR\")\nprocess.env[\"BRACKET\"]\n";
        let names: Vec<_> = env_reads(src).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "API_KEY", "BRACKET", "DB_URL", "GO_VAR", "REDIS", "RUST_VAR"
            ]
        );
    }

    #[test]
    fn port_defaults() {
        assert_eq!(
            source_port_defaults("const port = process.env.PORT || 3000;"),
            [3000]
        );
        assert_eq!(
            source_port_defaults("port = int(os.environ.get(\"PORT\", \"8000\"))"),
            [8000]
        );
        assert_eq!(source_port_defaults("app.listen(4000, () => {})"), [4000]);
        assert!(source_port_defaults("app.listen(port)").is_empty());
        assert_eq!(
            command_ports("PORT=3001 node server.js --port 9"),
            [3001, 9]
        );
        assert_eq!(command_ports("gunicorn --bind 0.0.0.0:8000 app"), [8000]);
    }

    #[test]
    fn dockerfile_ports_cover_expose_env_and_cmd() {
        let df = "FROM x\nEXPOSE 8000 9000/udp $OTHER\nENV PORT=7000\nCMD [\"uvicorn\", \"app:app\", \\\n  \"--port\", \"8001\"]\n";
        let got = dockerfile_ports(df);
        assert_eq!(
            got,
            [
                (8000, "tcp".to_owned(), "dockerfile-expose"),
                (9000, "udp".to_owned(), "dockerfile-expose"),
                (7000, "tcp".to_owned(), "dockerfile-env"),
                (8001, "tcp".to_owned(), "dockerfile-cmd"),
            ]
        );
    }

    #[test]
    fn interpolation_forms() {
        assert_eq!(
            interpolations("${A} $B ${C:-x} ${D:?need} ${E?e} $$F ${G:-${H}}"),
            [
                ("A".to_owned(), false),
                ("B".to_owned(), false),
                ("C".to_owned(), false),
                ("D".to_owned(), true),
                ("E".to_owned(), true),
                ("G".to_owned(), false),
                ("H".to_owned(), false),
            ]
        );
        assert_eq!(
            resolve_defaults("${P:-8080}:80"),
            ("8080:80".to_owned(), true)
        );
        assert_eq!(
            resolve_defaults("${P:?x}:80"),
            ("${P}:80".to_owned(), false)
        );
    }

    #[test]
    fn test_files_and_env_files() {
        for yes in [
            "tests/test_api.py",
            "test/health.test.js",
            "src/app.spec.ts",
            "pkg/x_test.go",
            "src/test/java/AppTest.java",
        ] {
            assert!(is_test_file(yes), "{yes}");
        }
        for no in [
            "src/app.py",
            "tests/__init__.py",
            "tests/data.json",
            "contest.py",
        ] {
            assert!(!is_test_file(no), "{no}");
        }
        assert_eq!(
            env_file_names("# c\nexport A=1\nB = 2\n\nlower_ok=3\n bad-name=1\n"),
            [
                ("A".to_owned(), 2),
                ("B".to_owned(), 3),
                ("lower_ok".to_owned(), 5)
            ]
        );
        assert!(is_env_file_name(".env.example") && is_env_file_name("app.env"));
        assert!(!is_env_file_name(".envrc") && !is_env_file_name("environment.yml"));
    }

    #[test]
    fn anchors_are_found_but_not_shell_ampersands() {
        let text = "x-common: &common\n  a: 1\nb: &ports [1]\nc: \"a && b\"\nd: <<: *common\n";
        assert_eq!(yaml_anchors(text), ["common", "ports"]);
    }
}

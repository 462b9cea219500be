//! `[notify.NAME]` tables: where run events are posted.

use super::walker::Walker;
use super::{Key, NOTIFY_KEYS, Value, is_env_name};
use crate::diagnostics::{Diagnostic, did_you_mean};
use crate::spec::{MAX_NOTIFY_RETRIES, NOTIFY_EVENTS, NotifyFormat, NotifyTarget, NotifyUrl};

pub(super) fn parse_notify(w: &mut Walker, name: &Key<'_>, v: &Value<'_>) -> Option<NotifyTarget> {
    let where_ = format!("[notify.{}]", name.get_ref());
    let t = w.table(v, &where_)?;
    let mut url = None;
    let mut url_given = false;
    let mut format = (NotifyFormat::Json, None);
    let mut secret = None;
    let mut on = vec!["run.finished".to_owned()];
    let mut timeout = std::time::Duration::from_secs(10);
    let mut retries = 3;
    let mut ok = true;
    for (k, val) in t {
        match k.get_ref().as_ref() {
            "url" => {
                url_given = true;
                if let Some(u) = w.string(val, "`url`") {
                    if u.starts_with("http://") || u.starts_with("https://") {
                        url = Some(NotifyUrl::Literal(u));
                    } else {
                        ok = false;
                        w.diags.push(
                            Diagnostic::at(
                                Some(val.span()),
                                "`url` must start with http:// or https://",
                            )
                            .with_help("a webhook URL that is a credential belongs in an environment variable: `url_env = \"NAME\"`"),
                        );
                    }
                }
            }
            "url_env" => {
                url_given = true;
                if let Some(n) = w.string(val, "`url_env`") {
                    if is_env_name(&n) {
                        url = Some(NotifyUrl::Env(n));
                    } else {
                        ok = false;
                        w.err(
                            val.span(),
                            format!("`url_env` `{n}` is not an environment variable name"),
                        );
                    }
                }
            }
            "format" => match w.string(val, "`format`").as_deref() {
                Some("slack") => format = (NotifyFormat::Slack, Some(val.span())),
                Some("json") => format = (NotifyFormat::Json, Some(val.span())),
                Some(other) => {
                    ok = false;
                    w.err(
                        val.span(),
                        format!("`format` must be \"slack\" or \"json\", not \"{other}\""),
                    );
                }
                None => ok = false,
            },
            "secret" => {
                if let Some(n) = w.string(val, "`secret`") {
                    if is_env_name(&n) {
                        secret = Some(n);
                    } else {
                        ok = false;
                        w.diags.push(
                            Diagnostic::at(
                                Some(val.span()),
                                format!("`secret` `{n}` is not an environment variable name"),
                            )
                            .with_help("`secret` names the variable holding the HMAC key, never the key itself"),
                        );
                    }
                }
            }
            "on" => {
                if let Some(events) = w.strings(val, "`on`") {
                    on.clear();
                    for e in events {
                        if NOTIFY_EVENTS.contains(&e.get_ref().as_str()) {
                            on.push(e.into_inner());
                        } else {
                            ok = false;
                            let mut d = Diagnostic::at(
                                Some(e.span()),
                                format!("unknown event `{}` in `on`", e.get_ref()),
                            );
                            d = match did_you_mean(e.get_ref(), NOTIFY_EVENTS.iter().copied()) {
                                Some(help) => d.with_help(help),
                                None => d.with_help(format!(
                                    "expected one of: {}",
                                    NOTIFY_EVENTS.join(", ")
                                )),
                            };
                            w.diags.push(d);
                        }
                    }
                }
            }
            "timeout" => match w.duration(val, "`timeout`") {
                Some(d) if !d.is_zero() => timeout = d,
                Some(_) => {
                    ok = false;
                    w.err(val.span(), "`timeout` must be more than zero");
                }
                None => ok = false,
            },
            "retries" => match w.integer_in(val, "`retries`", 0, i64::from(MAX_NOTIFY_RETRIES)) {
                Some(n) => retries = n as u32,
                None => ok = false,
            },
            _ => w.unknown_key(k, &where_, NOTIFY_KEYS),
        }
    }
    if let (NotifyFormat::Slack, Some(span), Some(_)) = (format.0, &format.1, &secret) {
        ok = false;
        w.diags.push(
            Diagnostic::at(
                Some(span.clone()),
                format!("{where_} has a `secret` but `format = \"slack\"`"),
            )
            .with_help("a Slack webhook is not signed: drop `secret`, or use `format = \"json\"`"),
        );
    }
    let Some(url) = url else {
        if url_given {
            return None;
        }
        w.diags.push(
            Diagnostic::at(Some(name.span()), format!("{where_} has no `url`"))
                .with_help("add `url = \"https://...\"` or `url_env = \"NAME\"`"),
        );
        return None;
    };
    ok.then(|| NotifyTarget {
        name: name.get_ref().to_string(),
        url,
        format: format.0,
        secret,
        on,
        timeout,
        retries,
    })
}

//! `[[schedule]]`: routes the host calls on a schedule, as Workers' Cron
//! Triggers and Spin's cron trigger do.
//!
//! ```toml
//! [[schedule]]
//! cron = "*/5 * * * *"         # minute hour day-of-month month day-of-week, UTC
//! path = "/api/tasks/cleanup"  # a path a route of this manifest answers
//! method = "POST"              # the default
//! ```
//!
//! A pattern has five fields, or six with seconds first (`*/10 * * * * *`),
//! and the aliases `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
//! Times are UTC. A tick that passed while no host was running is not run
//! later.

use super::error::ManifestError;
use super::schema::RawSchedule;
use super::RouteSpec;
use crate::router::Router;
use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use toml::Spanned;

/// One `[[schedule]]`, checked.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// The pattern as written.
    pub(crate) cron_text: String,
    pub(crate) cron: Cron,
    pub(crate) path: String,
    pub(crate) method: http::Method,
    pub(crate) line: usize,
}

impl PartialEq for ScheduleSpec {
    fn eq(&self, other: &Self) -> bool {
        (&self.cron_text, &self.path, &self.method, self.line)
            == (&other.cron_text, &other.path, &other.method, other.line)
    }
}

impl Eq for ScheduleSpec {}

impl ScheduleSpec {
    /// The first tick after `now`, if the pattern has one.
    pub(crate) fn next_after(&self, now: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(now, false).ok()
    }

    /// What names this schedule across deploys and hosts: its method, path
    /// and pattern.
    pub(crate) fn key(&self) -> String {
        format!("{} {} {}", self.method, self.path, self.cron_text)
    }

    pub fn cron(&self) -> &str {
        &self.cron_text
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn method(&self) -> &str {
        self.method.as_str()
    }
}

/// Parses a pattern: five fields, or six with seconds first; no years.
pub(crate) fn parse_cron(text: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|err| format!("cron {text:?} is not a cron pattern: {err}"))
}

/// Every `[[schedule]]` checked against the manifest's routes; each problem
/// is an error naming its line.
pub(crate) fn check_all(
    raw: &[Spanned<RawSchedule>],
    routes: &[RouteSpec],
    file: &str,
    line_of: &dyn Fn(usize) -> usize,
    errors: &mut Vec<ManifestError>,
) -> Vec<ScheduleSpec> {
    let router = Router::new(routes.iter().map(|route| &route.pattern));
    let mut schedules = Vec::new();
    for entry in raw {
        let line = line_of(entry.span().start);
        match check(entry.get_ref(), &router, line) {
            Ok(schedule) => schedules.push(schedule),
            Err(reason) => errors.push(ManifestError::Schedule {
                file: file.to_string(),
                line,
                reason,
            }),
        }
    }
    schedules
}

fn check(raw: &RawSchedule, router: &Router, line: usize) -> Result<ScheduleSpec, String> {
    let cron = parse_cron(&raw.cron)?;
    if !raw.path.starts_with('/') || raw.path.contains(['?', '#']) {
        return Err(format!(
            "path {:?} is not a request path such as \"/api/tasks/cleanup\"",
            raw.path
        ));
    }
    match router.lookup(&raw.path) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("no route of this manifest answers {}", raw.path)),
        Err(err) => return Err(format!("path {:?}: {err}", raw.path)),
    }
    let method = raw.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
    let method = match method.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => http::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("method {method:?} is not an HTTP method"))?,
        _ => {
            return Err(format!(
                "method {method:?}: a schedule calls GET, POST, PUT, PATCH or DELETE"
            ))
        }
    };
    Ok(ScheduleSpec {
        cron_text: raw.cron.clone(),
        cron,
        path: raw.path.clone(),
        method,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn patterns_take_five_or_six_fields_and_aliases() {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 18, 2, 30).unwrap();
        let next = |text: &str| {
            parse_cron(text)
                .unwrap()
                .find_next_occurrence(&at, false)
                .unwrap()
        };
        assert_eq!(
            next("*/5 * * * *"),
            Utc.with_ymd_and_hms(2026, 12, 3, 18, 5, 0).unwrap()
        );
        assert_eq!(
            next("* * * * * *"),
            Utc.with_ymd_and_hms(2026, 12, 3, 18, 2, 31).unwrap()
        );
        assert_eq!(
            next("@daily"),
            Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap()
        );
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * 2027",
            "every minute",
        ] {
            assert!(parse_cron(bad).is_err(), "{bad:?}");
        }
    }
}

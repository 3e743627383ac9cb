//! `edgehost check` and `edgehost routes`: load a manifest as a host would
//! (compiling every component) without serving it or opening its data; and
//! `edgehost limits`, the limits every route runs within.

use super::{load, Purpose};
use crate::manifest::limits::{markdown_table, LimitSpec, LIMITS};
use crate::manifest::{KvBackendKind, ServerLimits};
use std::path::Path;

/// `edgehost check`.
pub fn check(manifest_path: &Path) -> anyhow::Result<()> {
    let loaded = load(manifest_path, None, Purpose::Inspect)?;
    eprintln!(
        "{}: {} routes, all compiled and linked",
        loaded.manifest.file.display(),
        loaded.table.routes().len()
    );
    Ok(())
}

/// `edgehost routes`: the route table, one aligned row per route.
pub fn routes(manifest_path: &Path) -> anyhow::Result<()> {
    let loaded = load(manifest_path, None, Purpose::List)?;
    let mut rows = vec![[
        "PATH".to_string(),
        "METHODS".to_string(),
        "GRANTS".to_string(),
        "LIMITS".to_string(),
    ]];
    let listed: Vec<&LimitSpec> = LIMITS.iter().filter(|spec| spec.listed).collect();
    let server = ServerLimits::default();
    for (spec, route) in loaded.manifest.routes.iter().zip(loaded.table.routes()) {
        // A store's backend is shown unless it is the embedded default.
        let mut grants: Vec<String> = spec
            .kv
            .iter()
            .map(|store| match loaded.manifest.kv.get(store) {
                Some(config) if config.backend != KvBackendKind::Embedded => {
                    format!("kv:{store}({})", config.backend.name())
                }
                _ => format!("kv:{store}"),
            })
            .collect();
        for database in &spec.sql {
            grants.push(match loaded.manifest.sql.get(database) {
                Some(config) => format!("sql:{database}({})", config.backend.name()),
                None => format!("sql:{database}(sqlite)"),
            });
        }
        for (name, _) in &spec.env {
            if spec.secrets.contains(name) {
                grants.push(format!("secret:{name}"));
            } else {
                grants.push(format!("env:{name}"));
            }
        }
        for allowed in &spec.allowed_outbound_hosts {
            grants.push(format!("net:{allowed}"));
        }
        if spec.allow_private_networks {
            grants.push("net:private-networks".into());
        }
        if grants.is_empty() {
            grants.push("-".into());
        }
        let mut limits: Vec<String> = listed
            .iter()
            .filter_map(|limit| {
                let value = limit.get(&spec.limits, &server)?;
                Some(format!("{}={}", limit.key, limit.show(value)))
            })
            .collect();
        // Edge policies, when the route has them.
        if !spec.cache || !loaded.manifest.cache.enabled {
            limits.push("cache=off".into());
        }
        if let Some(cors) = &spec.cors {
            limits.push(match &cors.origins {
                None => "cors=*".to_string(),
                Some(origins) => format!("cors={}", origins.join(",")),
            });
        }
        if let Some(rate) = &spec.rate_limit {
            limits.push(format!(
                "rate_limit={}/{:?},burst={}",
                rate.requests, rate.per, rate.burst
            ));
        }
        // A WASI 0.3 component runs on the async engine: say so.
        let methods = if route.is_p3() {
            format!("{} (wasi:http@0.3)", route.allow)
        } else {
            route.allow.clone()
        };
        rows.push([
            route.name.to_string(),
            methods,
            grants.join(" "),
            limits.join(" "),
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// Rows in aligned columns.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// `edgehost schedules`: a manifest's `[[schedule]]` entries and the next
/// run of each (UTC), from this machine's clock.
pub fn schedules(manifest_path: &Path) -> anyhow::Result<()> {
    let loaded = load(manifest_path, None, Purpose::List)?;
    let now = chrono::Utc::now();
    let mut rows = vec![[
        "CRON".to_string(),
        "METHOD".to_string(),
        "PATH".to_string(),
        "NEXT RUN (UTC)".to_string(),
    ]];
    for schedule in &loaded.manifest.schedules {
        let next = schedule.next_after(&now).map_or("never".to_string(), |at| {
            at.format("%Y-%m-%d %H:%M:%S").to_string()
        });
        rows.push([
            schedule.cron().to_string(),
            schedule.method().to_string(),
            schedule.path().to_string(),
            next,
        ]);
    }
    if rows.len() == 1 {
        println!("{}: no [[schedule]] entries", manifest_path.display());
        return Ok(());
    }
    print_table(&rows);
    Ok(())
}

/// `edgehost limits`: every limit, its default and what happens when it is
/// hit (the README's table).
pub fn limits() {
    print!("{}", markdown_table());
}

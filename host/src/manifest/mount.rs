//! `[routes]`: merging the route crates a folder holds into the manifest's
//! `[[route]]` entries. An entry without `component` configures the crate
//! whose URL has its shape; every other crate becomes a route of its own.

use super::error::ManifestError;
use super::folders::FolderRoute;
use super::schema::RawRoute;
use crate::router::Pattern;
use toml::Spanned;

/// Merges the route crates `[routes]` found into the manifest's routes: an
/// entry without `component` configures the crate with its path, every other
/// crate becomes a route of its own (reported at the `dir` line). Returns, for
/// each route after merging, the crate it comes from.
pub(crate) fn mount_folder_routes(
    routes: &mut Vec<RawRoute>,
    found: Vec<FolderRoute>,
    dir_span: std::ops::Range<usize>,
    file: &str,
    errors: &mut Vec<ManifestError>,
    line_of: &dyn Fn(usize) -> usize,
) -> Vec<Option<FolderRoute>> {
    let dir_line = line_of(dir_span.start);
    let shape_of = |path: &str| Pattern::parse(path).ok().map(|p| p.shape());
    // One crate per shape: (shape, crate, configured by an entry).
    let mut crates: Vec<(Option<String>, FolderRoute, bool)> = Vec::new();
    for route in found {
        let shape = shape_of(&route.path);
        let same =
            |(s, _, _): &&(Option<String>, FolderRoute, bool)| shape.is_some() && *s == shape;
        if let Some((_, first, _)) = crates.iter().find(same) {
            errors.push(ManifestError::FolderClash {
                file: file.to_string(),
                line: dir_line,
                route: route.path.clone(),
                first: first.crate_dir.clone(),
                second: route.crate_dir.clone(),
            });
            continue;
        }
        crates.push((shape, route, false));
    }
    let mut sources = Vec::with_capacity(routes.len() + crates.len());
    for raw in routes.iter_mut() {
        let shape = shape_of(raw.path.get_ref());
        let line = line_of(raw.path.span().start);
        let route = raw.path.get_ref().clone();
        let crate_match = crates
            .iter_mut()
            .find(|(s, _, _)| shape.is_some() && *s == shape);
        let source = match (crate_match, &raw.component) {
            (Some((_, found, claimed)), None) => {
                *claimed = true;
                raw.component = Some(Spanned::new(raw.path.span(), found.component.clone()));
                Some(found.clone())
            }
            (Some((_, found, claimed)), Some(_)) => {
                *claimed = true;
                errors.push(ManifestError::FolderAndComponent {
                    file: file.to_string(),
                    line,
                    route,
                    crate_dir: found.crate_dir.clone(),
                });
                None
            }
            (None, None) => {
                errors.push(ManifestError::NoComponent {
                    file: file.to_string(),
                    line,
                    route,
                    folder: true,
                });
                None
            }
            (None, Some(_)) => None,
        };
        sources.push(source);
    }
    for (_, found, claimed) in crates {
        if claimed {
            continue;
        }
        routes.push(RawRoute::mounted(
            Spanned::new(dir_span.clone(), found.path.clone()),
            Spanned::new(dir_span.clone(), found.component.clone()),
        ));
        sources.push(Some(found));
    }
    sources
}

//! `weir hub catalog`: a static HTML page listing the filters in a registry.

use std::fmt::Write as _;

use serde::Serialize;

use crate::Result;
use crate::deploy::Published;
use crate::image::{Image, ImageManifest, Layout};
use crate::manifest::FilterManifest;
use crate::registry::{Client, ImageRef};

/// One repository in the catalog.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntry {
    /// The repository path.
    pub repository: String,
    /// Its tags, newest version first when they are versions.
    pub versions: Vec<CatalogVersion>,
}

/// One tag of a repository.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogVersion {
    /// The tag.
    pub tag: String,
    /// The manifest digest.
    pub digest: String,
    /// The layout.
    pub layout: Layout,
    /// Manifest plus blob sizes.
    pub size: u64,
    /// The weir filter manifest, when weir pushed the image.
    pub filter: Option<FilterManifest>,
    /// A ready-to-apply Istio `WasmPlugin` (Istio-loadable layouts only).
    pub wasm_plugin: Option<String>,
}

impl CatalogEntry {
    /// The filter manifest of the newest version that has one.
    pub fn latest_filter(&self) -> Option<&FilterManifest> {
        self.versions.iter().find_map(|v| v.filter.as_ref())
    }
}

/// Reads every repository and tag of `registry` (manifests only; no blobs).
///
/// # Errors
/// Registry errors.
pub async fn collect(client: &Client, registry: &str, insecure: bool) -> Result<Vec<CatalogEntry>> {
    let mut entries = Vec::new();
    for repository in client.repositories(registry).await? {
        let any: ImageRef = format!("{registry}/{repository}:latest").parse()?;
        let mut versions = Vec::new();
        for tag in client.tags(&any).await? {
            let reference = any.at_tag(&tag);
            let (bytes, digest) = client.manifest(&reference).await?;
            let manifest = ImageManifest::parse(&bytes)?;
            let size = bytes.len() as u64
                + manifest.config.iter().map(|c| c.size).sum::<u64>()
                + manifest.layers.iter().map(|l| l.size).sum::<u64>();
            let filter = manifest.filter_manifest();
            let image = Image {
                manifest_bytes: bytes,
                manifest,
                digest: digest.clone(),
                blobs: Vec::new(),
            };
            let wasm_plugin = filter.as_ref().and_then(|f| {
                Published {
                    reference: &reference,
                    image: &image,
                    filter: f,
                    insecure,
                }
                .istio_wasm_plugin()
            });
            versions.push(CatalogVersion {
                tag,
                digest,
                layout: image.layout(),
                size,
                filter,
                wasm_plugin,
            });
        }
        versions.sort_by(|a, b| version_order(&a.tag, &b.tag));
        entries.push(CatalogEntry {
            repository,
            versions,
        });
    }
    Ok(entries)
}

/// Orders tags newest first: versions (`1.10.0` above `1.9.0`, with or
/// without a leading `v`) before other tags (`latest`, `stable`), which follow
/// in name order.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(tag: &str) -> Option<Vec<u64>> {
        let core = tag.trim_start_matches('v');
        let core = core.split(['-', '+']).next().unwrap_or_default();
        core.split('.').map(|p| p.parse().ok()).collect()
    }
    match (parts(a), parts(b)) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A size in B, KiB or MiB.
pub fn human_size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
header{display:flex;justify-content:space-between;align-items:baseline;gap:1rem}
input[type=search]{padding:.4rem;width:16rem}
section.filter{border:1px solid #ddd;border-radius:6px;padding:1rem;margin:1rem 0}
section.filter h2{margin:0 0 .3rem 0;font-size:1.3rem}
.meta{color:#555;font-size:.9rem}
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:.9rem}
td code.digest{font-size:.75rem;word-break:break-all}
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eee}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}
pre{background:#f6f8fa;padding:.6rem;overflow:auto;border-radius:4px}
button.copy{float:right}";

const SCRIPT: &str = "(function(){
var sections=[].slice.call(document.querySelectorAll('section.filter'));
var versions=document.querySelectorAll('tr.version').length;
var count=document.getElementById('count');
function show(){var q=document.getElementById('search').value.toLowerCase();var n=0;
sections.forEach(function(s){var hit=s.getAttribute('data-search').indexOf(q)>=0;s.hidden=!hit;if(hit)n++;});
count.textContent=n+(n==1?' filter, ':' filters, ')+versions+(versions==1?' version':' versions');}
document.getElementById('search').addEventListener('input',show);
[].slice.call(document.querySelectorAll('button.copy')).forEach(function(b){
b.addEventListener('click',function(){var t=document.getElementById(b.getAttribute('data-target')).textContent;
if(navigator.clipboard){navigator.clipboard.writeText(t);}b.textContent='Copied';});});
show();document.body.setAttribute('data-ready','1');})();";

/// Renders the catalog page: per filter its description, license, source,
/// versions (tag, digest, format, ABI, size), config schema and a copy-paste
/// `WasmPlugin`.
pub fn render_html(registry: &str, entries: &[CatalogEntry]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Filters in {r}</title><style>{STYLE}</style></head><body>\
         <header><h1>Filters in <code>{r}</code></h1>\
         <input type=\"search\" id=\"search\" placeholder=\"Search filters\" aria-label=\"Search filters\"></header>\
         <p id=\"count\" class=\"meta\">{n} repositories</p>\n",
        r = esc(registry),
        n = entries.len()
    );
    for (i, entry) in entries.iter().enumerate() {
        let filter = entry.latest_filter();
        let name = filter.map_or(entry.repository.as_str(), |f| f.name.as_str());
        let description = filter.and_then(|f| f.description.as_deref()).unwrap_or("");
        let search = format!("{} {} {}", name, entry.repository, description).to_lowercase();
        let _ = write!(
            h,
            "<section class=\"filter\" id=\"filter-{i}\" data-name=\"{name}\" data-search=\"{search}\">\
             <h2>{name}</h2><p class=\"description\">{desc}</p><p class=\"meta\">\
             <code class=\"repository\">{registry}/{repo}</code>",
            name = esc(name),
            search = esc(&search),
            desc = esc(description),
            registry = esc(registry),
            repo = esc(&entry.repository),
        );
        if let Some(f) = filter {
            if let Some(l) = &f.license {
                let _ = write!(h, " · license <span class=\"license\">{}</span>", esc(l));
            }
            if let Some(s) = &f.source {
                let _ = write!(h, " · <a href=\"{0}\">source</a>", esc(s));
            }
            if let Some(sdk) = &f.sdk {
                let _ = write!(h, " · {} {}", esc(&sdk.name), esc(&sdk.version));
            }
        }
        h.push_str("</p><table><thead><tr><th>Version</th><th>Format</th><th>ABI</th><th>Size</th><th>Digest</th></tr></thead><tbody>");
        for v in &entry.versions {
            let abi = v
                .filter
                .as_ref()
                .map(|f| f.abi_versions.join(", "))
                .unwrap_or_default();
            let _ = write!(
                h,
                "<tr class=\"version\"><td class=\"tag\">{tag}</td><td title=\"{title}\">{layout}</td><td>{abi}</td>\
                 <td class=\"size\">{size}</td><td><code class=\"digest\">{digest}</code></td></tr>",
                tag = esc(&v.tag),
                layout = esc(v.layout.short()),
                title = esc(v.layout.describe()),
                abi = esc(&abi),
                size = human_size(v.size),
                digest = esc(&v.digest),
            );
        }
        h.push_str("</tbody></table>");
        if let Some(schema) = filter.and_then(|f| f.config_schema.as_ref()) {
            let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
            let _ = write!(
                h,
                "<details class=\"schema\"><summary>Configuration schema</summary><pre>{}</pre></details>",
                esc(&pretty)
            );
        }
        if let Some((v, yaml)) = entry
            .versions
            .iter()
            .find_map(|v| v.wasm_plugin.as_ref().map(|y| (v, y)))
        {
            let _ = write!(
                h,
                "<details class=\"wasmplugin\" open><summary>Istio WasmPlugin ({tag})</summary>\
                 <button class=\"copy\" data-target=\"wp-{i}\">Copy</button>\
                 <pre id=\"wp-{i}\">{yaml}</pre></details>",
                tag = esc(&v.tag),
                yaml = esc(yaml),
            );
        }
        h.push_str("</section>\n");
    }
    let _ = writeln!(h, "<script>{SCRIPT}</script></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::version_order;

    #[test]
    fn versions_sort_newest_first_then_other_tags() {
        let mut tags = vec![
            "latest",
            "0.9.0",
            "v1.10.0",
            "1.2.0",
            "stable",
            "1.10.0-rc1",
        ];
        tags.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            tags,
            [
                "1.10.0-rc1",
                "v1.10.0",
                "1.2.0",
                "0.9.0",
                "latest",
                "stable"
            ]
        );
    }
}

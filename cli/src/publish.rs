//! `weir push`, `pull`, `inspect`, `tag`, `login`, `logout` and `weir hub`:
//! publishing filters to OCI registries.

use std::io::{IsTerminal as _, Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use weir_hub::catalog::{self, human_size};
use weir_hub::deploy::Published;
use weir_hub::progress::{Progress, Quiet};
use weir_hub::registry::{self, Check, Verification};
use weir_hub::{
    Client, ClientOptions, Credentials, DockerConfig, FilterManifest, Format, Image, ImageRef,
    ModuleInfo, Sdk,
};

use crate::build;

/// How to reach and authenticate to a registry.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP (registries on loopback or in a lab).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// User name (the password is read from stdin with --password-stdin, or
    /// from $WEIR_REGISTRY_PASSWORD). Default: the docker config's credentials.
    #[arg(short, long, global = true)]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// The docker config file with credentials (default:
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json). A registry bearer
    /// token can also be given in $WEIR_REGISTRY_TOKEN.
    #[arg(long, global = true, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Print JSON on stdout instead of text (and no progress bars).
    #[arg(long, global = true)]
    pub json: bool,
}

impl RegistryArgs {
    fn docker_config(&self) -> Result<DockerConfig> {
        Ok(match &self.docker_config {
            Some(path) => DockerConfig::at(path),
            None => DockerConfig::default_location()?,
        })
    }

    fn password(&self) -> Result<Option<String>> {
        if self.password_stdin {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from stdin")?;
            return Ok(Some(password.trim_end_matches(['\r', '\n']).to_owned()));
        }
        Ok(std::env::var("WEIR_REGISTRY_PASSWORD").ok())
    }

    fn credentials(&self, registry: &str) -> Result<Credentials> {
        if let Some(username) = &self.username {
            let Some(password) = self.password()? else {
                bail!(
                    "--username needs a password: pass --password-stdin or set WEIR_REGISTRY_PASSWORD"
                );
            };
            return Ok(Credentials::Basic {
                username: username.clone(),
                password,
            });
        }
        if let Ok(token) = std::env::var("WEIR_REGISTRY_TOKEN") {
            return Ok(Credentials::Bearer(token));
        }
        Ok(self.docker_config()?.lookup(registry)?)
    }

    fn client(&self, registry: &str) -> Result<Client> {
        Ok(Client::new(ClientOptions {
            insecure: self.insecure,
            credentials: self.credentials(registry)?,
        }))
    }

    fn progress(&self) -> Arc<dyn Progress> {
        let quiet =
            self.json || std::env::var_os("CI").is_some() || !std::io::stderr().is_terminal();
        if quiet {
            Arc::new(Quiet)
        } else {
            Arc::new(Bars::new())
        }
    }
}

/// Progress bars on stderr, one per blob.
struct Bars(std::sync::Mutex<Option<indicatif::ProgressBar>>);

impl Bars {
    fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    fn with(&self, f: impl FnOnce(&mut Option<indicatif::ProgressBar>)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Progress for Bars {
    fn start(&self, label: &str, total: u64) {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_owned());
        self.with(|slot| *slot = Some(bar));
    }
    fn advance(&self, bytes: u64) {
        self.with(|slot| {
            if let Some(bar) = slot {
                bar.inc(bytes);
            }
        });
    }
    fn finish(&self) {
        self.with(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        });
    }
}

/// Which configuration `push` and `inspect` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// A summary and every snippet.
    All,
    /// Only the Istio WasmPlugin (pipe it to `kubectl apply -f -`).
    Wasmplugin,
    /// Only the Gloo Gateway.
    Gloo,
    /// Only the Envoy remote code snippet.
    Envoy,
}

/// The `--format` of a pushed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Istio compat: one tar+gzip layer with plugin.wasm (Istio; every registry).
    Compat,
    /// WebAssembly-Hub two-layer variant (Istio and Gloo).
    Oci,
    /// CNCF wasm artifact (wasmCloud, containerd, wkg; not Istio).
    Cncf,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Compat => Format::Compat,
            FormatArg::Oci => Format::Oci,
            FormatArg::Cncf => Format::Cncf,
        }
    }
}

/// `weir push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Where to push: REGISTRY/REPOSITORY:TAG. With -p and no tag, the tag is
    /// the package version.
    pub reference: String,
    /// Build this filter package and push its module (name, version,
    /// description, license and source come from its Cargo.toml).
    #[arg(short, long = "package", conflicts_with = "wasm")]
    pub package: Option<String>,
    /// Push this module file instead.
    #[arg(long, value_name = "FILE", required_unless_present = "package")]
    pub wasm: Option<PathBuf>,
    /// Image format.
    #[arg(long, value_enum, default_value = "compat")]
    pub format: FormatArg,
    /// Filter name (default: the package or file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Filter version (default: the package version or the tag).
    #[arg(long = "filter-version")]
    pub filter_version: Option<String>,
    /// One-line description.
    #[arg(long)]
    pub description: Option<String>,
    /// SPDX license.
    #[arg(long)]
    pub license: Option<String>,
    /// Source repository URL.
    #[arg(long)]
    pub source: Option<String>,
    /// JSON Schema of the filter's configuration (default: config.schema.json
    /// in the package directory, if present).
    #[arg(long, value_name = "FILE")]
    pub config_schema: Option<PathBuf>,
    /// What to print after the push.
    #[arg(long, value_enum, default_value = "all")]
    pub emit: Emit,
    /// Registry access and output options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `weir pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST.
    pub reference: String,
    /// Where to write the module (default: NAME.wasm in the current directory, from the filter name).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Registry access and output options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `weir inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST.
    pub reference: String,
    /// Also print deployment configuration.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// Registry access and output options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `weir tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to tag: REGISTRY/REPOSITORY:TAG or …@sha256:DIGEST.
    pub source: String,
    /// The new tag: REGISTRY/REPOSITORY:TAG (same registry).
    pub target: String,
    /// Registry access and output options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `weir login` and `weir logout`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry host, e.g. ghcr.io or 127.0.0.1:5000.
    pub server: String,
    /// Registry access and output options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `weir hub …`.
#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Build a static HTML page of the filters in a registry.
    Catalog(CatalogArgs),
    /// Print the JSON Schema of the weir filter manifest.
    Schema,
}

/// `weir hub catalog`.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// The registry host.
    pub server: String,
    /// The page to write.
    #[arg(short, long, value_name = "FILE", default_value = "catalog.html")]
    pub output: PathBuf,
    /// Registry access and output options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn parse_ref(text: &str) -> Result<ImageRef> {
    Ok(text.parse::<ImageRef>()?)
}

/// Package facts from `cargo metadata`.
#[derive(Debug, Default)]
struct Package {
    name: String,
    version: String,
    description: Option<String>,
    license: Option<String>,
    repository: Option<String>,
    dir: PathBuf,
    sdk: Option<Sdk>,
}

fn package_metadata(root: &Path, package: &str) -> Result<Package> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let find = |name: &str| packages.iter().find(|p| p["name"] == name);
    let Some(p) = find(package) else {
        bail!(
            "no package {package:?} in the workspace at {}",
            root.display()
        );
    };
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let sdk = p["dependencies"]
        .as_array()
        .and_then(|deps| deps.iter().find(|d| d["name"] == "weir"))
        .map(|d| Sdk {
            name: "weir".into(),
            version: find("weir")
                .and_then(|w| text(&w["version"]))
                .or_else(|| {
                    text(&d["req"]).map(|r| r.trim_start_matches(['^', '=', '~']).to_owned())
                })
                .unwrap_or_default(),
        });
    Ok(Package {
        name: text(&p["name"]).unwrap_or_default(),
        version: text(&p["version"]).unwrap_or_default(),
        description: text(&p["description"]),
        license: text(&p["license"]),
        repository: text(&p["repository"]),
        dir: p["manifest_path"]
            .as_str()
            .and_then(|m| Path::new(m).parent())
            .map(Path::to_owned)
            .unwrap_or_default(),
        sdk,
    })
}

fn has_tag_or_digest(reference: &str) -> bool {
    let last = reference.rsplit('/').next().unwrap_or_default();
    last.contains(':') || last.contains('@')
}

fn verdict(check: &Check) -> String {
    match check {
        Check::Loads => "loads".into(),
        Check::Skipped => "not checked".into(),
        Check::Rejected(reason) => format!("would not load ({reason})"),
    }
}

fn snippets(published: &Published<'_>) -> serde_json::Value {
    json!({
        "wasmPlugin": published.istio_wasm_plugin(),
        "glooGateway": published.gloo_gateway(),
        "envoyRemote": published.envoy_remote(),
    })
}

fn write_snippets(out: &mut dyn Write, published: &Published<'_>, emit: Emit) -> Result<()> {
    let plugin = published.istio_wasm_plugin();
    match emit {
        Emit::Wasmplugin => match plugin {
            Some(yaml) => write!(out, "{yaml}")?,
            None => bail!(
                "Istio does not load {} images: push with --format compat or oci",
                published.image.layout().describe()
            ),
        },
        Emit::Gloo => write!(out, "{}", published.gloo_gateway())?,
        Emit::Envoy => write!(out, "{}", published.envoy_remote())?,
        Emit::All => {
            match plugin {
                Some(yaml) => writeln!(
                    out,
                    "\n# Istio WasmPlugin (kubectl apply -f -)\n---\n{yaml}"
                )?,
                None => writeln!(
                    out,
                    "\n# Istio does not load this format; push with --format compat for Istio."
                )?,
            }
            writeln!(out, "# Gloo Gateway\n---\n{}", published.gloo_gateway())?;
            write!(
                out,
                "# Envoy HTTP filter with a remote code source\n---\n{}",
                published.envoy_remote()
            )?;
        }
    }
    Ok(())
}

/// `weir push`: builds (with -p) or reads the module, pushes it, verifies it
/// on a fresh pull and prints the digest and deployment configuration.
///
/// # Errors
/// Build, manifest and registry errors, each naming its cause.
pub fn push(args: PushArgs, out: &mut dyn Write) -> Result<()> {
    let (wasm_path, package) = match (&args.package, &args.wasm) {
        (Some(p), _) => {
            let root = build::workspace_root(std::env::current_dir()?)?;
            let built = build::build_filters(&root, &[p.as_str()])?;
            let wasm = built
                .into_iter()
                .next()
                .map(|b| b.wasm)
                .context("the build produced no module")?;
            (wasm, Some(package_metadata(&root, p)?))
        }
        (None, Some(w)) => (w.clone(), None),
        (None, None) => bail!("pass -p PACKAGE or --wasm FILE"),
    };
    let wasm =
        std::fs::read(&wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    let info =
        ModuleInfo::read(&wasm).map_err(|e| anyhow::anyhow!("{}: {e}", wasm_path.display()))?;

    let mut text = args.reference.clone();
    let version_hint = args
        .filter_version
        .clone()
        .or_else(|| package.as_ref().map(|p| p.version.clone()));
    if !has_tag_or_digest(&text)
        && let Some(v) = &version_hint
    {
        text = format!("{text}:{v}");
    }
    let reference = parse_ref(&text)?;
    let name = args
        .name
        .clone()
        .or_else(|| package.as_ref().map(|p| p.name.clone()))
        .or_else(|| {
            wasm_path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-").to_lowercase())
        })
        .unwrap_or_else(|| "filter".into());
    let version = version_hint
        .or_else(|| reference.tag().map(str::to_owned))
        .unwrap_or_else(|| "0.0.0".into());
    let mut filter = FilterManifest::new(&name, &version, &info)?;
    filter.description = args
        .description
        .clone()
        .or_else(|| package.as_ref().and_then(|p| p.description.clone()));
    filter.license = args
        .license
        .clone()
        .or_else(|| package.as_ref().and_then(|p| p.license.clone()));
    filter.source = args
        .source
        .clone()
        .or_else(|| package.as_ref().and_then(|p| p.repository.clone()));
    filter.sdk = package.as_ref().and_then(|p| p.sdk.clone());
    let schema_path = args.config_schema.clone().or_else(|| {
        package
            .as_ref()
            .map(|p| p.dir.join("config.schema.json"))
            .filter(|p| p.is_file())
    });
    if let Some(path) = schema_path {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        filter.config_schema = Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?,
        );
    }
    filter.validate()?;

    let format = Format::from(args.format);
    if format == Format::Cncf && args.emit == Emit::Wasmplugin {
        bail!("Istio does not load cncf images: push with --format compat or oci for a WasmPlugin");
    }
    let image = Image::build(format, &filter, &wasm)?;
    let client = args.registry.client(reference.registry())?;
    let progress = args.registry.progress();
    let report = runtime()?.block_on(client.push(&reference, &image, format, progress))?;
    let published = Published {
        reference: &reference,
        image: &image,
        filter: &filter,
        insecure: args.registry.insecure,
    };
    if args.registry.json {
        let mut value = serde_json::to_value(&report)?;
        value["filter"] = serde_json::to_value(&filter)?;
        value["snippets"] = snippets(&published);
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let summary = format!(
        "pushed {reference} ({format}): {} uploaded, {} already there, {} in {} ms\n\
         digest: {}\n\
         verified on a fresh pull: Istio: {}; Gloo: {}; CNCF artifact consumers: {}\n\
         module: {} ABI {} sha256 {} ({})\n",
        report.uploaded_blobs,
        report.existing_blobs,
        human_size(report.size),
        report.push_ms + report.verify_ms,
        report.digest,
        verdict(&report.verified.istio),
        verdict(&report.verified.gloo),
        verdict(&report.verified.cncf),
        filter.name,
        filter.abi_versions.join(","),
        filter.sha256,
        human_size(filter.size),
    );
    if args.emit == Emit::All {
        write!(out, "{summary}")?;
    } else {
        std::io::stderr().write_all(summary.as_bytes())?;
    }
    write_snippets(out, &published, args.emit)
}

/// `weir pull`: fetches the image, verifies every digest, extracts the module
/// with the rules of its layout and writes it.
///
/// # Errors
/// Registry errors, digest mismatches, or a layout no consumer loads.
pub fn pull(args: PullArgs, out: &mut dyn Write) -> Result<()> {
    let reference = parse_ref(&args.reference)?;
    let client = args.registry.client(reference.registry())?;
    let pulled = runtime()?.block_on(client.pull(&reference, args.registry.progress()))?;
    let image = &pulled.image;
    let module = weir_hub::rules::istio(image)
        .or_else(|_| weir_hub::rules::gloo(image).map(|(l, _)| l))
        .or_else(|_| weir_hub::rules::cncf(image))
        .map_err(|reason| weir_hub::Error::WouldNotLoad {
            consumer: "weir",
            reference: reference.to_string(),
            reason,
        })?
        .module;
    let filter = image.manifest.filter_manifest();
    if let Some(f) = &filter {
        let actual = weir_hub::module::sha256_hex(&module);
        if actual != f.sha256 {
            return Err(weir_hub::Error::DigestMismatch {
                what: "the module against its filter manifest".into(),
                expected: f.sha256.clone(),
                actual,
            }
            .into());
        }
    }
    let name = filter.as_ref().map(|f| f.name.clone()).unwrap_or_else(|| {
        reference
            .repository()
            .rsplit('/')
            .next()
            .unwrap_or("filter")
            .to_owned()
    });
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.wasm", name.replace('-', "_"))));
    std::fs::write(&output, &module).with_context(|| format!("writing {}", output.display()))?;
    let sha = weir_hub::module::sha256_hex(&module);
    if args.registry.json {
        let value = json!({
            "reference": reference.to_string(),
            "digest": image.digest,
            "layout": image.layout(),
            "output": output,
            "moduleSha256": sha,
            "moduleSize": module.len(),
            "downloadedBytes": pulled.bytes,
            "pullMs": u64::try_from(pulled.elapsed.as_millis()).unwrap_or(u64::MAX),
            "filter": filter,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        writeln!(
            out,
            "pulled {reference} ({}), digest {}, every digest verified\nwrote {} ({}, sha256 {sha})",
            image.layout().describe(),
            image.digest,
            output.display(),
            human_size(module.len() as u64),
        )?;
    }
    Ok(())
}

/// `weir inspect`: the manifest, layers, annotations, ABI, size and digest,
/// and which consumers would load the image.
///
/// # Errors
/// Registry errors.
pub fn inspect(args: InspectArgs, out: &mut dyn Write) -> Result<()> {
    let reference = parse_ref(&args.reference)?;
    let client = args.registry.client(reference.registry())?;
    let pulled = runtime()?.block_on(client.pull(&reference, Arc::new(Quiet)))?;
    let image = &pulled.image;
    let verification = Verification::of(image);
    let filter = image.manifest.filter_manifest();
    let abi = filter
        .as_ref()
        .map(|f| f.abi_versions.clone())
        .or_else(|| {
            image
                .manifest
                .annotations
                .get(weir_hub::image::annotation::ABI_VERSION)
                .map(|a| a.split(',').map(str::to_owned).collect())
        })
        .unwrap_or_default();
    let published = filter.as_ref().map(|f| Published {
        reference: &reference,
        image,
        filter: f,
        insecure: args.registry.insecure,
    });
    if args.registry.json {
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest_bytes)?;
        let mut value = json!({
            "reference": reference.to_string(),
            "digest": image.digest,
            "layout": image.layout(),
            "size": image.size(),
            "abiVersions": abi,
            "manifest": manifest,
            "filter": filter,
            "verification": verification,
        });
        if let Some(p) = &published {
            value["snippets"] = snippets(p);
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    if let (Some(emit), Some(p)) = (args.emit, &published)
        && emit != Emit::All
    {
        return write_snippets(out, p, emit);
    }
    let m = &image.manifest;
    writeln!(out, "reference: {reference}")?;
    writeln!(out, "digest:    {}", image.digest)?;
    writeln!(out, "layout:    {}", image.layout().describe())?;
    writeln!(
        out,
        "manifest:  {}",
        m.media_type.as_deref().unwrap_or("(no mediaType field)")
    )?;
    writeln!(
        out,
        "size:      {} (manifest and blobs)",
        human_size(image.size())
    )?;
    writeln!(
        out,
        "abi:       {}",
        if abi.is_empty() {
            "-".into()
        } else {
            abi.join(", ")
        }
    )?;
    if let Some(c) = &m.config {
        writeln!(
            out,
            "config:    {} {} ({})",
            c.media_type,
            c.digest,
            human_size(c.size)
        )?;
    }
    for (i, l) in m.layers.iter().enumerate() {
        let title = l
            .annotations
            .get(weir_hub::image::annotation::TITLE)
            .map(|t| format!(" {t}"))
            .unwrap_or_default();
        writeln!(
            out,
            "layer {i}:   {} {} ({}){title}",
            l.media_type,
            l.digest,
            human_size(l.size)
        )?;
    }
    for (k, v) in &m.annotations {
        if k == weir_hub::manifest::MANIFEST_ANNOTATION {
            writeln!(out, "annotation {k}: (the weir filter manifest, below)")?;
        } else {
            writeln!(out, "annotation {k}: {v}")?;
        }
    }
    if let Some(f) = &filter {
        writeln!(
            out,
            "filter:    {}",
            serde_json::to_string_pretty(f)?.replace('\n', "\n           ")
        )?;
    }
    writeln!(out, "istio:     {}", verdict(&verification.istio))?;
    writeln!(out, "gloo:      {}", verdict(&verification.gloo))?;
    writeln!(out, "cncf:      {}", verdict(&verification.cncf))?;
    if let (Some(Emit::All), Some(p)) = (args.emit, &published) {
        write_snippets(out, p, Emit::All)?;
    }
    Ok(())
}

/// `weir tag`.
///
/// # Errors
/// Registry errors.
pub fn tag(args: TagArgs, out: &mut dyn Write) -> Result<()> {
    let source = parse_ref(&args.source)?;
    let target = parse_ref(&args.target)?;
    let client = args.registry.client(source.registry())?;
    let digest = runtime()?.block_on(client.tag(&source, &target))?;
    if args.registry.json {
        let value =
            json!({"source": source.to_string(), "target": target.to_string(), "digest": digest});
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        writeln!(out, "tagged {target} -> {digest}")?;
    }
    Ok(())
}

/// `weir login`: checks the credentials against the registry, then stores them
/// in the docker config (or its credential helper).
///
/// # Errors
/// If the registry refuses the credentials or the config cannot be written.
pub fn login(args: LoginArgs, out: &mut dyn Write) -> Result<()> {
    let Some(username) = args.registry.username.clone() else {
        bail!("pass --username (and --password-stdin, or set WEIR_REGISTRY_PASSWORD)");
    };
    let Some(password) = args.registry.password()? else {
        bail!("no password: pass --password-stdin or set WEIR_REGISTRY_PASSWORD");
    };
    let credentials = Credentials::Basic {
        username: username.clone(),
        password: password.clone(),
    };
    runtime()?.block_on(registry::check_login(
        &args.server,
        &credentials,
        args.registry.insecure,
    ))?;
    let config = args.registry.docker_config()?;
    config.store(&args.server, &username, &password)?;
    if args.registry.json {
        let value = json!({"server": args.server, "username": username, "config": config.path()});
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        writeln!(
            out,
            "logged in to {} as {username} (saved in {})",
            args.server,
            config.path().display()
        )?;
    }
    Ok(())
}

/// `weir logout`.
///
/// # Errors
/// If the config cannot be written.
pub fn logout(args: LoginArgs, out: &mut dyn Write) -> Result<()> {
    let config = args.registry.docker_config()?;
    let removed = config.erase(&args.server)?;
    if args.registry.json {
        writeln!(
            out,
            "{}",
            json!({"server": args.server, "removed": removed})
        )?;
    } else if removed {
        writeln!(out, "logged out of {}", args.server)?;
    } else {
        writeln!(
            out,
            "no credentials for {} in {}",
            args.server,
            config.path().display()
        )?;
    }
    Ok(())
}

/// `weir hub …`.
///
/// # Errors
/// Registry and I/O errors.
pub fn hub(command: HubCommand, out: &mut dyn Write) -> Result<()> {
    match command {
        HubCommand::Schema => {
            writeln!(out, "{}", weir_hub::manifest::PUBLISHED_SCHEMA.trim_end())?;
        }
        HubCommand::Catalog(args) => {
            let client = args.registry.client(&args.server)?;
            let entries = runtime()?.block_on(catalog::collect(
                &client,
                &args.server,
                args.registry.insecure,
            ))?;
            let html = catalog::render_html(&args.server, &entries);
            std::fs::write(&args.output, html)
                .with_context(|| format!("writing {}", args.output.display()))?;
            let versions: usize = entries.iter().map(|e| e.versions.len()).sum();
            if args.registry.json {
                let value = json!({
                    "server": args.server,
                    "output": args.output,
                    "repositories": entries,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                writeln!(
                    out,
                    "wrote {}: {} repositories, {versions} versions",
                    args.output.display(),
                    entries.len()
                )?;
            }
        }
    }
    Ok(())
}

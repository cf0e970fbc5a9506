//! A compiled proxy-wasm module, checked the way Envoy checks it at load.

use std::sync::Arc;

use wasmtime::{ExternType, FuncType, InstancePre, Linker, Module, ModuleExport, ValType};

use crate::abi::{self, AbiVersion};
use crate::engine::{Engine, Runtime};
use crate::state::HostState;
use crate::{Error, Result};

/// A compiled, linked proxy-wasm module. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<Inner>,
}

struct Inner {
    /// Not the [`Engine`] itself: the engine caches its plugins.
    runtime: Runtime,
    abi: AbiVersion,
    pre: InstancePre<HostState>,
    /// Where each of [`CALLBACKS`] is among the module's exports (in that
    /// order), and its memory: an instance finds them without looking up
    /// names.
    callbacks: Box<[Option<ModuleExport>]>,
    memory: Option<ModuleExport>,
    /// The module's bytes: Envoy's VM key covers the code itself.
    code: Arc<[u8]>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("abi", &self.inner.abi)
            .finish_non_exhaustive()
    }
}

/// Reads the ABI marker from the export section before compiling, as Envoy does:
/// the first known `proxy_abi_version_*` export wins.
pub(crate) fn detect_abi(bytes: &[u8]) -> Result<AbiVersion> {
    let mut unknown = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| Error::Wasm(e.to_string()))?;
        if let wasmparser::Payload::ExportSection(exports) = payload {
            for export in exports {
                let export = export.map_err(|e| Error::Wasm(e.to_string()))?;
                match export.name {
                    "proxy_abi_version_0_1_0" => return Ok(AbiVersion::V0_1_0),
                    "proxy_abi_version_0_2_0" => return Ok(AbiVersion::V0_2_0),
                    "proxy_abi_version_0_2_1" => return Ok(AbiVersion::V0_2_1),
                    name if name.starts_with("proxy_abi_version_") => unknown.push(name.to_owned()),
                    _ => {}
                }
            }
        }
    }
    Err(Error::UnknownAbi { found: unknown })
}

const I: ValType = ValType::I32;

/// Callbacks Envoy looks up by name in a 0.2.x module, with their signatures
/// (0.1.0 differs: see [`expected_signature`]).
/// Envoy's V8 runtime refuses a module that exports one with another signature.
pub(crate) const CALLBACKS: &[(&str, &[ValType], &[ValType])] = &[
    ("_initialize", &[], &[]),
    ("_start", &[], &[]),
    ("main", &[I, I], &[I]),
    ("__main_void", &[], &[I]),
    ("malloc", &[I], &[I]),
    ("proxy_on_memory_allocate", &[I], &[I]),
    ("proxy_on_context_create", &[I, I], &[]),
    ("proxy_on_vm_start", &[I, I], &[I]),
    ("proxy_validate_configuration", &[I, I], &[I]),
    ("proxy_on_configure", &[I, I], &[I]),
    ("proxy_on_tick", &[I], &[]),
    ("proxy_on_queue_ready", &[I, I], &[]),
    ("proxy_on_foreign_function", &[I, I, I], &[]),
    ("proxy_on_done", &[I], &[I]),
    ("proxy_on_log", &[I], &[]),
    ("proxy_on_delete", &[I], &[]),
    ("proxy_on_request_headers", &[I, I, I], &[I]),
    ("proxy_on_request_body", &[I, I, I], &[I]),
    ("proxy_on_request_trailers", &[I, I], &[I]),
    ("proxy_on_request_metadata", &[I, I], &[I]),
    ("proxy_on_response_headers", &[I, I, I], &[I]),
    ("proxy_on_response_body", &[I, I, I], &[I]),
    ("proxy_on_response_trailers", &[I, I], &[I]),
    ("proxy_on_response_metadata", &[I, I], &[I]),
    ("proxy_on_new_connection", &[I], &[I]),
    ("proxy_on_downstream_data", &[I, I, I], &[I]),
    ("proxy_on_upstream_data", &[I, I, I], &[I]),
    ("proxy_on_downstream_connection_close", &[I, I], &[]),
    ("proxy_on_upstream_connection_close", &[I, I], &[]),
    ("proxy_on_http_call_response", &[I, I, I, I, I], &[]),
    ("proxy_on_grpc_receive_initial_metadata", &[I, I, I], &[]),
    ("proxy_on_grpc_receive", &[I, I, I], &[]),
    ("proxy_on_grpc_receive_trailing_metadata", &[I, I, I], &[]),
    ("proxy_on_grpc_close", &[I, I, I], &[]),
];

/// The position of the callback `name` in [`CALLBACKS`]; evaluated in a
/// constant, an unknown name fails the build.
pub(crate) const fn callback_index(name: &str) -> usize {
    let mut i = 0;
    while i < CALLBACKS.len() {
        let known = CALLBACKS[i].0.as_bytes();
        let name = name.as_bytes();
        if known.len() == name.len() {
            let mut j = 0;
            while j < known.len() && known[j] == name[j] {
                j += 1;
            }
            if j == known.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a proxy-wasm callback");
}

/// Where the callback `$name` is among a [`Plugin`]'s exports, if it has it.
macro_rules! callback_export {
    ($plugin:expr, $name:literal) => {
        $plugin.callback_export({
            const INDEX: usize = $crate::plugin::callback_index($name);
            INDEX
        })
    };
}
pub(crate) use callback_export;

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let list = |tys: &[ValType]| {
        tys.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(params), list(results))
}

/// The signature Envoy expects for the export `name` in a module of version
/// `abi`, or `None` if Envoy does not look it up.
fn expected_signature(
    name: &str,
    abi: AbiVersion,
) -> Option<(&'static [ValType], &'static [ValType])> {
    let v0_1_0 = abi == AbiVersion::V0_1_0;
    match name {
        "proxy_on_request_headers" | "proxy_on_response_headers" if v0_1_0 => Some((&[I, I], &[I])),
        "proxy_on_foreign_function" if v0_1_0 => None,
        _ => CALLBACKS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, params, results)| (params, results)),
    }
}

fn check_exports(module: &Module, abi: AbiVersion) -> Result<()> {
    for &(name, _, _) in CALLBACKS {
        let Some((params, results)) = expected_signature(name, abi) else {
            continue;
        };
        let Some(ExternType::Func(found)) = module.get_export(name) else {
            continue;
        };
        let matches = found
            .params()
            .map(|t| t.to_string())
            .eq(params.iter().map(ToString::to_string))
            && found
                .results()
                .map(|t| t.to_string())
                .eq(results.iter().map(ToString::to_string));
        if !matches {
            return Err(Error::BadExport {
                name: name.to_owned(),
                expected: signature(params, results),
                found: describe(&found),
            });
        }
    }
    let has_allocator = ["malloc", "proxy_on_memory_allocate"]
        .iter()
        .any(|name| matches!(module.get_export(name), Some(ExternType::Func(_))));
    if !has_allocator {
        return Err(Error::MissingAllocator);
    }
    Ok(())
}

fn describe(ty: &FuncType) -> String {
    signature(
        &ty.params().collect::<Vec<_>>(),
        &ty.results().collect::<Vec<_>>(),
    )
}

impl Plugin {
    pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> Result<Self> {
        let abi = detect_abi(bytes)?;
        let module = Module::new(engine.runtime().wasmtime(), bytes)
            .map_err(|e| Error::Wasm(format!("{e:#}")))?;
        check_exports(&module, abi)?;
        let mut linker = Linker::new(engine.runtime().wasmtime());
        abi::add_to_linker(&mut linker, abi).map_err(|e| Error::Wasm(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Link(format!("{e:#}")))?;
        let func_export = |name| match module.get_export(name) {
            Some(ExternType::Func(_)) => module.get_export_index(name),
            _ => None,
        };
        let callbacks = CALLBACKS
            .iter()
            .map(|&(name, _, _)| func_export(name))
            .collect();
        let memory = match module.get_export("memory") {
            Some(ExternType::Memory(_)) => module.get_export_index("memory"),
            _ => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                runtime: engine.runtime().clone(),
                abi,
                pre,
                callbacks,
                memory,
                code: Arc::from(bytes),
            }),
        })
    }

    /// Where the callback at `index` in [`CALLBACKS`] is among the module's
    /// exports, if the module exports that function (see [`callback_export`]).
    pub(crate) fn callback_export(&self, index: usize) -> Option<ModuleExport> {
        self.inner.callbacks.get(index).copied().flatten()
    }

    /// Where the module's `memory` is among its exports, if it exports one.
    pub(crate) fn memory_export(&self) -> Option<ModuleExport> {
        self.inner.memory
    }

    /// The ABI version the module declares.
    pub fn abi(&self) -> AbiVersion {
        self.inner.abi
    }

    /// Whether `other` was loaded from the same bytes (two loads of one
    /// module may race past the engine's cache and compile twice).
    pub(crate) fn same_code(&self, other: &Plugin) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.code == other.inner.code
    }

    /// What its VMs need of the engine that compiled it.
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<HostState> {
        &self.inner.pre
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a module exporting empty functions with the given names.
    fn module_exporting(names_src: &str) -> Vec<u8> {
        let names: Vec<&str> = names_src.split_whitespace().collect();
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // type section: one type () -> ()
        m.extend([1, 4, 1, 0x60, 0, 0]);
        // function section
        let mut funcs = vec![names.len() as u8];
        funcs.extend(std::iter::repeat_n(0u8, names.len()));
        m.push(3);
        m.push(funcs.len() as u8);
        m.extend(funcs);
        // export section
        let mut exports = vec![names.len() as u8];
        for (i, n) in names.iter().enumerate() {
            exports.push(n.len() as u8);
            exports.extend(n.as_bytes());
            exports.extend([0, i as u8]);
        }
        m.push(7);
        m.push(exports.len() as u8);
        m.extend(exports);
        // code section: empty bodies
        let mut code = vec![names.len() as u8];
        for _ in &names {
            code.extend([2, 0, 0x0b]);
        }
        m.push(10);
        m.push(code.len() as u8);
        m.extend(code);
        m
    }

    #[test]
    fn detects_known_markers() {
        assert_eq!(
            detect_abi(&module_exporting("proxy_abi_version_0_2_1")).expect("0.2.1"),
            AbiVersion::V0_2_1
        );
        assert_eq!(
            detect_abi(&module_exporting("other proxy_abi_version_0_2_0")).expect("0.2.0"),
            AbiVersion::V0_2_0
        );
    }

    #[test]
    fn refuses_unknown_and_missing_markers() {
        let err = detect_abi(&module_exporting("proxy_abi_version_0_3_0")).expect_err("unknown");
        assert!(
            err.to_string().contains("found proxy_abi_version_0_3_0"),
            "{err}"
        );
        let err = detect_abi(&module_exporting("_start")).expect_err("missing");
        assert!(
            matches!(err, Error::UnknownAbi { ref found } if found.is_empty()),
            "{err}"
        );
    }

    #[test]
    fn accepts_the_first_abi_like_envoy() {
        // Envoy 1.40 still loads 0.1.0 modules.
        assert_eq!(
            detect_abi(&module_exporting("proxy_abi_version_0_1_0")).expect("0.1.0"),
            AbiVersion::V0_1_0
        );
    }

    #[test]
    fn headers_callbacks_take_their_abis_signature() {
        let expected = |name, abi| expected_signature(name, abi).map(|(p, r)| signature(p, r));
        assert_eq!(
            expected("proxy_on_request_headers", AbiVersion::V0_1_0).as_deref(),
            Some("(i32, i32) -> (i32)")
        );
        assert_eq!(
            expected("proxy_on_response_headers", AbiVersion::V0_2_1).as_deref(),
            Some("(i32, i32, i32) -> (i32)")
        );
        assert_eq!(
            expected("proxy_on_foreign_function", AbiVersion::V0_1_0),
            None,
            "not looked up for 0.1.0"
        );
    }

    #[test]
    fn callbacks_are_indexed_by_name() {
        for (i, (name, _, _)) in CALLBACKS.iter().enumerate() {
            assert_eq!(callback_index(name), i, "{name}");
        }
    }

    #[test]
    fn exported_callbacks_are_located_at_load() {
        let engine = Engine::builder().on_demand().build().expect("engine");
        let wasm = wat::parse_str(
            r#"(module
              (memory (export "memory") 1)
              (global (export "proxy_on_log") i32 (i32.const 0))
              (func (export "malloc") (param i32) (result i32) (i32.const 8))
              (func (export "proxy_abi_version_0_2_1"))
              (func (export "proxy_on_tick") (param i32)))"#,
        )
        .expect("module");
        let plugin = Plugin::compile(&engine, &wasm).expect("plugin");
        assert!(callback_export!(plugin, "proxy_on_tick").is_some());
        assert!(callback_export!(plugin, "malloc").is_some());
        assert!(
            callback_export!(plugin, "proxy_on_done").is_none(),
            "absent"
        );
        assert!(
            callback_export!(plugin, "proxy_on_log").is_none(),
            "not a function"
        );
        assert!(plugin.memory_export().is_some());
    }
}

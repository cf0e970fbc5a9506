//! Typed VM configuration: `vm_config.configuration` in Envoy, shared by every
//! plugin of the VM and parsed once when the VM starts.
//!
//! Declare the type when exporting the filter, then read it from anywhere in
//! the module with [`vm_config`]:
//!
//! ```
//! use std::rc::Rc;
//! use weir::{Flow, HttpFilter, RequestHeaders, Result};
//!
//! /// `vm_config.configuration`, e.g. `{"region": "eu-west-1"}`.
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Vm {
//!     region: String,
//! }
//!
//! struct Tag;
//!
//! impl HttpFilter for Tag {
//!     type Config = ();
//!
//!     fn new(_: Rc<()>) -> Self {
//!         Tag
//!     }
//!
//!     fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
//!         if let Some(vm) = weir::vm_config::<Vm>() {
//!             req.set("x-region", &vm.region)?;
//!         }
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! weir::export_http_filter!(Tag, vm_config = Vm);
//! # fn main() {}
//! ```
//!
//! A VM configuration that does not parse fails `proxy_on_vm_start`, so Envoy
//! refuses the plugin, and the log names the offending field. An empty VM
//! configuration reads as `{}`, as a plugin configuration does.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use serde::de::DeserializeOwned;

use crate::Result;
use crate::host::BufferType;

thread_local! {
    /// The VM's parsed configuration. A Wasm VM is single-threaded: this is
    /// per VM.
    static VM_CONFIG: RefCell<Option<Rc<dyn Any>>> = const { RefCell::new(None) };
}

/// The VM configuration, parsed when the VM started, if the filter was exported
/// with `vm_config = V` (see the [module docs](self)). `None` before the VM
/// started, or if `V` is not the declared type.
#[must_use]
pub fn vm_config<V: 'static>() -> Option<Rc<V>> {
    let any = VM_CONFIG.with(|c| c.borrow().clone())?;
    any.downcast::<V>().ok()
}

/// What `proxy_on_vm_start` does: parse and keep the VM configuration, or
/// nothing for a filter exported without one.
#[doc(hidden)]
pub trait VmStart {
    /// Runs in `proxy_on_vm_start` with the VM configuration's size.
    ///
    /// # Errors
    /// Why the VM must not start.
    fn vm_start(size: usize) -> Result<()>;
}

/// A filter without a VM configuration type: the VM configuration, if any, is
/// not read.
#[doc(hidden)]
#[derive(Debug)]
pub struct NoVmConfig;

impl VmStart for NoVmConfig {
    fn vm_start(_size: usize) -> Result<()> {
        Ok(())
    }
}

/// A filter exported with `vm_config = V`.
#[doc(hidden)]
#[derive(Debug)]
pub struct Typed<V>(PhantomData<V>);

impl<V: DeserializeOwned + 'static> VmStart for Typed<V> {
    fn vm_start(size: usize) -> Result<()> {
        let config: Rc<dyn Any> = Rc::new(crate::config::read_config::<V>(
            BufferType::VmConfiguration,
            size,
            "the VM configuration",
        )?);
        VM_CONFIG.with(|c| *c.borrow_mut() = Some(config));
        Ok(())
    }
}

/// Forgets the VM configuration (a new mock VM).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn reset() {
    VM_CONFIG.with(|c| *c.borrow_mut() = None);
}

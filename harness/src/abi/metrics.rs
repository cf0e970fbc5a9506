//! `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric` with Envoy's rules: ids are per VM (the low two bits are the
//! type, each new id adds 4), the stats themselves are process-wide by name, a
//! counter's `record` adds, `increment` needs a positive delta, and histograms
//! cannot be read back.

use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{Status, proxy_fn};
use crate::shared::{MetricType, MetricValue};
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_define_metric",
        |caller, kind: i32, name_ptr: i32, name_len: i32, ret_id: i32| {
            let Some(kind) = MetricType::from_raw(kind as u32) else {
                return Ok(Status::BadArgument as i32);
            };
            let result = memory::read_string(&mut caller, name_ptr, name_len).and_then(|name| {
                let state = caller.data_mut();
                state.shared.stats().define(&name, kind);
                let id = state.define_metric(kind, name);
                memory::write_u32(&mut caller, ret_id, id)
            });
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_increment_metric",
        |caller, id: i32, delta: i64| {
            let state = caller.data();
            let Some((_, name)) = state.metric(id as u32) else {
                return Ok(Status::NotFound as i32);
            };
            let mut stats = state.shared.stats();
            match stats.get_mut(name) {
                Some(MetricValue::Counter(v)) if delta > 0 => {
                    *v = v.wrapping_add(delta as u64);
                    Status::Ok
                }
                Some(MetricValue::Gauge(v)) => {
                    *v = v.wrapping_add(delta as u64);
                    Status::Ok
                }
                Some(_) => Status::BadArgument,
                None => Status::NotFound,
            }
        }
    );
    proxy_fn!(
        linker,
        "proxy_record_metric",
        |caller, id: i32, value: i64| {
            let state = caller.data();
            let Some((_, name)) = state.metric(id as u32) else {
                return Ok(Status::NotFound as i32);
            };
            let value = value as u64;
            let mut stats = state.shared.stats();
            match stats.get_mut(name) {
                Some(MetricValue::Counter(v)) => *v = v.wrapping_add(value),
                Some(MetricValue::Gauge(v)) => *v = value,
                Some(MetricValue::Histogram(samples)) => samples.push(value),
                None => return Ok(Status::NotFound as i32),
            }
            Status::Ok
        }
    );
    proxy_fn!(linker, "proxy_get_metric", |caller, id: i32, ret: i32| {
        let state = caller.data();
        let Some((_, name)) = state.metric(id as u32) else {
            return Ok(Status::NotFound as i32);
        };
        let value = match state.shared.stats().get(name) {
            Some(MetricValue::Counter(v) | MetricValue::Gauge(v)) => *v,
            Some(MetricValue::Histogram(_)) => return Ok(Status::BadArgument as i32),
            None => return Ok(Status::NotFound as i32),
        };
        let result: Result<(), Fault> = memory::write_u64(&mut caller, ret, value);
        memory::status(result)?
    });
    Ok(())
}

//! Calling an SDK route: one method export, on one request record, in a
//! fresh instance, within the route's time, CPU and memory limits.

use super::cpu::{CpuMeter, Metered};
use super::failure::{guest_trap, instantiate_error, GuestError};
use super::route::CompiledRoute;
use super::store::new_store;
use super::Runtime;
use crate::wit::{Method, MethodFunc, Request, Response};
use std::sync::Arc;

impl Runtime {
    /// Runs `method`'s handler of `route` on `request` in a fresh instance,
    /// within the route's time and memory limits. The caller holds a slot from
    /// [`CompiledRoute::try_reserve`].
    pub async fn call(
        &self,
        route: &CompiledRoute,
        method: Method,
        request: Request,
        request_id: &Arc<str>,
    ) -> Result<Response, GuestError> {
        let timeout = route.limits.timeout;
        let meter = route.limits.cpu_time.map(|_| Arc::new(CpuMeter::default()));
        let call = self.call_in_fresh_instance(route, method, request, request_id, meter.clone());
        // Dropping the call's future at the deadline drops the store and the
        // instance with it; the guest is paused at an epoch tick, never mid-host-call.
        let result = match meter {
            Some(meter) => tokio::time::timeout(timeout, Metered::new(call, meter)).await,
            None => tokio::time::timeout(timeout, call).await,
        };
        result.unwrap_or(Err(GuestError::Timeout(timeout)))
    }

    async fn call_in_fresh_instance(
        &self,
        route: &CompiledRoute,
        method: Method,
        request: Request,
        request_id: &Arc<str>,
        cpu: Option<Arc<CpuMeter>>,
    ) -> Result<Response, GuestError> {
        let no_export = || {
            GuestError::Instantiate(wasmtime::format_err!(
                "route has no `{}` export",
                method.export_name()
            ))
        };
        let export = route.handlers[method.index()].ok_or_else(no_export)?;
        let mut store = new_store(&self.engine, &route.grants, request_id, cpu);
        let instance = route
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(instantiate_error)?;
        let func = instance
            .get_func(&mut store, export)
            .ok_or_else(no_export)?;
        // SAFETY: `compile_route` type-checked every method export against
        // `MethodFunc` when the route was loaded; checking it again per
        // request would cost a tenth of a microsecond each time.
        let func = unsafe { MethodFunc::new_unchecked(func) };
        let (response,) = func
            .call_async(&mut store, (request,))
            .await
            .map_err(|err| guest_trap(store.data(), &err, request_id))?;
        Ok(response)
    }
}

// as-config: a filter whose RootContext overrides onConfigure and reads the
// plugin configuration through the SDK (super.onConfigure, then
// getConfiguration). In @solo-io/proxy-runtime 0.1.8, RootContext.onConfigure
// passes the configuration's size where proxy_get_buffer_bytes expects the
// address to store the returned size at; this filter exists to show what the
// host does with that call.
//
// Start-up: logs the size it was given and the configuration the SDK read.
// Request path: logs the path and adds `x-as-config: <configuration read>`.
// Stream end: logs `as-config: done id=...`.

export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, stream_context, log, LogLevelValues,
  FilterHeadersStatusValues,
} from "@solo-io/proxy-runtime";

const NAME = "as-config";

function info(message: string): void {
  log(LogLevelValues.info, NAME + ": " + message);
}

class ConfigRoot extends RootContext {
  onConfigure(configuration_size: u32): bool {
    info("onConfigure configuration_size=" + configuration_size.toString());
    const ok = super.onConfigure(configuration_size);
    const configuration = this.getConfiguration();
    info("configured ok=" + (ok ? "true" : "false") + " configuration_len=" +
      configuration.length.toString() + " configuration=" + configuration);
    return ok;
  }

  createContext(context_id: u32): Context {
    return new ConfigStream(context_id, this);
  }
}

class ConfigStream extends Context {
  id: string = "";

  constructor(context_id: u32, root: ConfigRoot) {
    super(context_id, root);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const request = stream_context.headers.request;
    this.id = request.get("x-probe-id");
    const configuration = this.root_context.getConfiguration();
    info("request path=" + request.get(":path") + " configuration=" + configuration);
    request.add("x-as-config", configuration);
    return FilterHeadersStatusValues.Continue;
  }

  onLog(): void {
    info("done id=" + this.id);
  }
}

// The conformance suite configures plugins with an empty root_id; also answer
// to the filter's own name.
registerRootContext((context_id: u32): RootContext => new ConfigRoot(context_id), "");
registerRootContext((context_id: u32): RootContext => new ConfigRoot(context_id), NAME);

// as-config-direct: like as-config, but its RootContext's onConfigure does not
// call the SDK's RootContext.onConfigure. It reads the plugin configuration
// itself with the SDK's get_buffer_bytes helper, which passes a proper address
// for the returned size, so the same SDK version reads the configuration
// correctly. (An empty configuration is not read at all: for a zero length the
// host writes nothing back, and the helper would then decode whatever the
// previous host call left in the SDK's shared return slots.)
//
// Start-up: logs the size it was given and the configuration it read.
// Request path: logs the path and adds `x-as-config: <configuration read>`.
// Stream end: logs `as-config-direct: done id=...`.

export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, stream_context, log, LogLevelValues,
  FilterHeadersStatusValues,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";

const NAME = "as-config-direct";

function info(message: string): void {
  log(LogLevelValues.info, NAME + ": " + message);
}

class DirectConfigRoot extends RootContext {
  configuration: string = "";

  onConfigure(configuration_size: u32): bool {
    info("onConfigure configuration_size=" + configuration_size.toString());
    if (configuration_size == 0) {
      this.configuration = "";
    } else {
      const bytes = get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, configuration_size);
      this.configuration = String.UTF8.decode(bytes);
    }
    info("configured ok=true configuration_len=" + this.configuration.length.toString() +
      " configuration=" + this.configuration);
    return true;
  }

  createContext(context_id: u32): Context {
    return new DirectConfigStream(context_id, this);
  }
}

class DirectConfigStream extends Context {
  id: string = "";

  constructor(context_id: u32, root: DirectConfigRoot) {
    super(context_id, root);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const request = stream_context.headers.request;
    this.id = request.get("x-probe-id");
    const configuration = (this.root_context as DirectConfigRoot).configuration;
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
registerRootContext((context_id: u32): RootContext => new DirectConfigRoot(context_id), "");
registerRootContext((context_id: u32): RootContext => new DirectConfigRoot(context_id), NAME);

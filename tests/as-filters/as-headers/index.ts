// as-headers: a header-manipulating HTTP filter written against the
// AssemblyScript proxy-wasm SDK (@solo-io/proxy-runtime), for weir's
// conformance suite.
//
// Request path:  logs the path, adds `x-as-added: 1`, remembers `x-as-echo`;
//                answers 403 locally when the request has `x-as-deny`;
//                throws when it has `x-as-abort` (the SDK's abort handler logs
//                the message at critical level and calls proc_exit).
// Response path: logs the status, echoes the remembered value as
//                `x-as-echo-back`, counts response body bytes.
// Stream end:    logs one summary line (`as-headers: done id=...`).
//
// The RootContext does not override onConfigure: the SDK's own implementation
// runs.

export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, stream_context, log, LogLevelValues,
  FilterHeadersStatusValues, FilterDataStatusValues, send_local_response,
  HeaderPair, GrpcStatusValues, Counter,
} from "@solo-io/proxy-runtime";

const NAME = "as-headers";

function info(message: string): void {
  log(LogLevelValues.info, NAME + ": " + message);
}

class HeadersRoot extends RootContext {
  requests: Counter | null = null;

  createContext(context_id: u32): Context {
    if (this.requests === null) {
      this.requests = new Counter("as_headers.requests");
    }
    return new HeadersStream(context_id, this);
  }
}

class HeadersStream extends Context {
  id: string = "";
  echo: string = "";
  denied: bool = false;
  body_bytes: usize = 0;

  constructor(context_id: u32, root: HeadersRoot) {
    super(context_id, root);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const request = stream_context.headers.request;
    const root = this.root_context as HeadersRoot;
    const requests = root.requests;
    if (requests !== null) {
      requests.increment(1);
    }
    this.id = request.get("x-probe-id");
    this.echo = request.get("x-as-echo");
    info("request path=" + request.get(":path") + " headers=" + count.toString());
    if (request.get("x-as-abort") != "") {
      throw new Error("as-headers: abort requested");
    }
    if (request.get("x-as-deny") != "") {
      this.denied = true;
      info("denying");
      const extra: HeaderPair[] = [
        new HeaderPair(String.UTF8.encode("x-as-denied"), String.UTF8.encode("1")),
      ];
      send_local_response(403, "as_denied", String.UTF8.encode("denied by as-headers\n"),
        extra, GrpcStatusValues.InvalidCode);
      return FilterHeadersStatusValues.StopIteration;
    }
    request.add("x-as-added", "1");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const response = stream_context.headers.response;
    info("response status=" + response.get(":status"));
    if (this.echo != "") {
      response.add("x-as-echo-back", this.echo);
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    this.body_bytes += body_buffer_length;
    return FilterDataStatusValues.Continue;
  }

  onLog(): void {
    info("done id=" + this.id + " denied=" + (this.denied ? "yes" : "no") +
      " response_body_bytes=" + this.body_bytes.toString());
  }
}

// The conformance suite configures plugins with an empty root_id; also answer
// to the filter's own name.
registerRootContext((context_id: u32): RootContext => new HeadersRoot(context_id), "");
registerRootContext((context_id: u32): RootContext => new HeadersRoot(context_id), NAME);

// Type declarations of airlay.js, the browser client of the airlay event
// server. The server serves them at /client/airlay.d.ts (and names them in
// the X-TypeScript-Types header of /client/airlay.js). Copy this file next
// to where your bundler finds the module, or declare the URL as a module:
//
//   declare module "https://events.example.com/client/airlay.js" {
//     export * from "./airlay";
//   }
//
// CI checks these declarations with tsc against typecheck/check.ts.

/** The event types of the contract (GET /api/config lists them). */
export type EventType = "issueUpdate" | "notification" | "datasetUpdate" | "uploadFile" | "downloadFile" | "request";

/** A server answer to a request: code 0 is done, anything else says why not. */
export interface Answer {
  status: number;
  message: string;
  /** 0 Ok, 1 Token not set, 2 Invalid token, 3 User not exists, 4 Not access for dataset, 5 Invalid request, 6 Too many subscriptions, 7 Service unavailable. */
  code: number;
  /** Only with a `since` attach (a re-attach after a drop): whether every missed event follows. */
  recovered?: boolean;
}

/** An event the server sent. */
export interface AirlayEvent<D = unknown> {
  type: EventType | string;
  id: string;
  /** Always an array (empty when there is nothing to add). */
  data: D[];
  /** The event's position; the client re-attaches after a drop with the last one as since. */
  pos: string;
}

/** Why an attempt to connect failed (airlay.js asks the server over HTTP to tell). */
export type FailCause =
  /** the server cannot be reached: down, wrong URL, or the network */
  | "unreachable"
  /** the server refuses this page's origin (allowed_origins) */
  | "origin"
  /** the server answers HTTP but refused the WebSocket handshake (full, shutting down, a proxy without upgrades) */
  | "refused"
  /** the server answers but is not ready (shutting down, MongoDB down) */
  | "unavailable"
  /** no answer within connectTimeout */
  | "timeout"
  /** GET /api/config answered with an error */
  | "discovery"
  /** the WebSocket URL is not valid */
  | "url";

export type State =
  | { state: "open" }
  | { state: "close"; reason: "normal" | "drop"; code?: number; text?: string; retry?: number }
  | { state: "fail"; error: string; cause?: FailCause; retry: number };

/** What "error" listeners get: a re-attach or token refresh that failed. */
export interface ClientError {
  action: "attach" | "detach";
  type: EventType | string;
  id?: string;
  /** The server's answer when it refused. */
  answer?: Answer;
  /** The reason when there was no answer (the token provider failed). */
  error?: string;
}

/** The answer of GET /api/config. */
export interface ServerConfig {
  version: string;
  websocket: string;
  publish_enabled: boolean;
  files_enabled: boolean;
  event_types: string[];
  limits: { max_subscriptions: number; max_message_bytes: number };
  /** How long the server keeps events for resuming (0: no history). */
  history: { ttl_seconds: number };
}

export interface Options {
  /** The server: its base URL (http(s)://HOST:PORT, discovery through /api/config) or its ws(s):// URL. Default: the server that served the module. */
  url?: string;
  /** Returns an access token (RS256 JWT); called whenever one is needed. */
  token?: () => string | Promise<string>;
  /** Milliseconds: the first wait after a drop lies in [minBackoff, 2*minBackoff]. Default 500. */
  minBackoff?: number;
  /** Milliseconds: no wait is longer. Default 30000. */
  maxBackoff?: number;
  /** Milliseconds for one attempt (discovery and handshake). Default 10000. */
  connectTimeout?: number;
  /** Milliseconds before a token's exp to replace it; negative: never ahead of time. Default 30000. */
  refreshBefore?: number;
  /** A source of randomness in [0, 1) for the backoff jitter. Default Math.random. */
  random?: () => number;
  onState?: (s: State) => void;
  onEvent?: (e: AirlayEvent) => void;
  onError?: (e: ClientError) => void;
  onReload?: (s: Reload) => void;
}

/** What "reload" listeners get: a re-attach after a drop answered recovered:false, so events of this subscription may have been missed: reload the object. */
export interface Reload {
  type: EventType | string;
  id?: string;
}

/** What "reply" listeners get: the server's answer to a reply that onRequest sent (code 5: another tab replied first, or the request timed out). */
export interface ReplyResult {
  id: string;
  answer: Answer;
}

/** A backend's request (POST /api/ask) as onRequest's callback gets it beside its data. */
export interface AskRequest<D = unknown> extends AirlayEvent<D> {
  type: "request";
}

export interface Listeners {
  state: State;
  event: AirlayEvent;
  error: ClientError;
  reload: Reload;
  reply: ReplyResult;
}

export declare const DEFAULTS: Readonly<{
  minBackoff: number;
  maxBackoff: number;
  connectTimeout: number;
  refreshBefore: number;
}>;

/** The wait before attempt n: uniformly random in [min, min(max, min * 2^(n+1))]. */
export declare function backoffDelay(n: number, min: number, max: number, random?: () => number): number;

/** The exp of a JWT in milliseconds (unverified), or 0. */
export declare function tokenExpiry(token: string): number;

/** One connection to the server that comes back after drops. */
export declare class AirlayClient {
  constructor(options?: Options);
  readonly options: Required<Pick<Options, "minBackoff" | "maxBackoff" | "connectTimeout" | "refreshBefore">> & Options;
  readonly url: string;
  /** The answer of /api/config once known. */
  config: ServerConfig | null;
  state: "connecting" | "open" | "closed";
  /** Subscribes fn; returns a function that unsubscribes it. */
  on<K extends keyof Listeners>(name: K, fn: (value: Listeners[K]) => void): () => boolean;
  /** Connects (connect() calls it). */
  start(): this;
  /** Subscribes to (type, id); with code 0 the callback gets each event and the subscription is re-attached after every reconnect. */
  attach<D = unknown>(type: EventType | string, id?: string, callback?: (e: AirlayEvent<D>) => void, onReload?: (s: Reload) => void): Promise<Answer>;
  /**
   * Attaches "request" and answers each request of a backend (POST /api/ask) with what callback returns or its Promise
   * resolves to: an array is the reply's data, another value is sent as [value]; a throw or rejection sends no reply.
   */
  onRequest<D = unknown, R = unknown>(callback: (data: D[], request: AskRequest<D>) => R | R[] | Promise<R | R[]>): Promise<Answer>;
  /** Sends data as the reply to request id: code 0 taken, 5 not an open request of this user (answered, timed out). */
  reply(id: string, data: unknown[]): Promise<Answer>;
  /** The position of the last event of (type, id), "" before the first: what a re-attach sends as since. */
  pos(type: EventType | string, id?: string): string;
  /** Removes callback (every callback when none is given); unsubscribes when none is left. */
  detach<D = unknown>(type: EventType | string, id?: string, callback?: (e: AirlayEvent<D>) => void): Promise<Answer>;
  /** What the client holds. */
  subscriptions(): { type: string; id?: string }[];
  /** Closes the connection (a "normal" close) and stops reconnecting. */
  close(): void;
}

/** A client that is connecting. */
export declare function connect(options?: Options): AirlayClient;

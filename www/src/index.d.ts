// Types of amulet-web's public API (hand-written; the implementation is plain ESM JavaScript).

// ---------------------------------------------------------------------------------------------
// Errors

/** Every code an AmuletError can carry. */
export type AmuletErrorCode =
  | 'BAD_MODEL' // not a readable GGUF file
  | 'UNSUPPORTED_MODEL' // a GGUF the engine cannot run (architecture, quantization)
  | 'BAD_OPTION' // a wrong, unknown or out-of-range option; `option` names it
  | 'TOKENIZER'
  | 'CHAT_TEMPLATE'
  | 'CONTEXT_OVERFLOW' // the prompt does not fit the context
  | 'ABORTED' // an AbortSignal fired (error.name is 'AbortError', or 'TimeoutError' for AbortSignal.timeout(); cause: the signal's reason)
  | 'COMPUTE'
  | 'IO' // an HTTP error, a file that cannot be read, a .wasm that could not be loaded
  | 'TOO_LARGE' // the model cannot fit where it would run (wasm32's 4 GB), known before the download
  | 'NO_WEBGPU' // device: 'webgpu' where the realm has no WebGPU adapter (navigator.gpu)
  | 'NETWORK' // the connection failed, or a download broke and could not be resumed
  | 'INTEGRITY' // the file's SHA-256 is not the `integrity` given
  | 'DISPOSED' // the engine has been disposed
  | 'NOT_READY' // closedFormStrength before the wasm module was initialised
  | 'WORKER' // the worker failed (its 'error' event: a script that did not load, an uncaught error) or a message could not cross
  | 'WORKER_LOST'; // the worker ended under a pending or later call (terminate(), the browser reclaiming it), or a thread of the CPU pool died: create a new engine

export declare const ERROR_CODES: readonly AmuletErrorCode[];

export declare class AmuletError extends Error {
  constructor(code: AmuletErrorCode, message: string, extra?: { option?: string; cause?: unknown });
  /** For code 'ABORTED': 'TimeoutError' when the signal's reason is one (AbortSignal.timeout(), as
   *  fetch's rejection is named), else 'AbortError'. 'AmuletError' for every other code. */
  name: 'AmuletError' | 'AbortError' | 'TimeoutError';
  code: AmuletErrorCode;
  /** The option at fault, for BAD_OPTION. */
  option?: string;
}

// ---------------------------------------------------------------------------------------------
// Loading

export type Device = 'auto' | 'webgpu' | 'cpu';

/** A GGUF model: a URL, shard URLs (concatenated in order), a Blob/File, or its bytes.
 *  In Node a string without a URL scheme is a file path, and file: URLs are read from disk. */
export type ModelSource = string | URL | ReadonlyArray<string | URL> | ArrayBuffer | ArrayBufferView | Blob;

export interface LoadProgress {
  /** 'download': bytes arriving (network, cache, file); 'load': layers being built. */
  phase: 'download' | 'load';
  /** Bytes (download) or layers (load) done. */
  loaded: number;
  /** Bytes (0 when unknown) or layers in all. */
  total: number;
  /** The whole load, 0..1, monotonic (download takes 0..0.9 when there is one). */
  progress: number;
  /** A human-readable line, e.g. 'Downloading 12.0 / 98.4 MB'. */
  text: string;
}

export interface LoadOptions {
  /** 'auto' (default): WebGPU on a hardware adapter, else the wasm CPU path; 'webgpu': WebGPU on
   *  any adapter (software ones too), NO_WEBGPU when there is none; 'cpu': the wasm CPU path. */
  device?: Device;
  onProgress?: (progress: LoadProgress) => void;
  /** Keep downloaded files in the Cache API (true: cache 'amulet-web-models', or a cache name)
   *  and read them from there next time. Ignored where `caches` does not exist. */
  cache?: boolean | string;
  /** Aborts the download (rejects with ABORTED). */
  signal?: AbortSignal;
  /** The model id reported in info.model and OpenAI responses (default: the file name). */
  model?: string;
  /** Where the .wasm comes from, when not next to the package (only the first load of a realm uses it). */
  wasm?: WasmInput;
  /** Extra fetch() options for URL sources (headers, credentials, ...). */
  fetchOptions?: RequestInit;
  /** The file's SHA-256, as in SRI (`'sha256-<base64>'`) or 64 hex digits: checked as the bytes
   *  arrive, before the model is used or cached (INTEGRITY on a mismatch). */
  integrity?: string;
  /** CPU threads: 'auto' (default: every core) or a count. More than one needs the threaded
   *  build, which runs where the page is cross-origin isolated (COOP/COEP); elsewhere one
   *  thread runs and info.threadsReason says why. The first load of a realm sizes its pool. */
  threads?: number | 'auto';
  /** CPU kernels' SIMD: 'auto' (default: relaxed SIMD's byte dot product where the engine has
   *  it, e.g. Chrome/Edge 114+; plain simd128 elsewhere) or 'simd128' (the plain build). The
   *  first load of a realm picks its build. */
  simd?: 'auto' | 'simd128';
  /** Bytes of KV cache kept between requests (default 256 MiB; 0: none): a request whose
   *  messages continue an earlier one (a conversation) re-reads only what is new. */
  prefixCacheBytes?: number;
}

export type WasmInput = string | URL | Response | BufferSource | WebAssembly.Module;

export interface EngineInfo {
  /** Model id: LoadOptions.model, else the source file name, else the GGUF name. */
  model: string;
  /** general.name from the GGUF. */
  name: string;
  architecture: string;
  quantization: string;
  contextLength: number;
  vocabSize: number;
  device: 'cpu' | 'webgpu';
  /** Why this backend: the adapter, or why WebGPU was passed over (no adapter, a software one,
   *  a model over its limits, an upload it refused: then 'auto' runs on the CPU). */
  deviceReason: string;
  /** True when the GGUF had no usable chat template and a generic one is used. */
  chatTemplateFallback: boolean;
  /** The Cache API: 'hit' (read from it), 'stored' (downloaded and kept), 'not-stored'
   *  (downloaded, but the cache refused it: `cacheNote` says why, e.g. the quota), 'off'. */
  cached: 'hit' | 'stored' | 'not-stored' | 'off';
  cacheNote: string;
  /** CPU threads the model runs on (1 on WebGPU), and why that many. */
  threads: number;
  threadsReason: string;
  /** The SIMD tier of the CPU kernels' build, and why that one. */
  simd: 'relaxed-simd' | 'simd128';
  simdReason: string;
}

// ---------------------------------------------------------------------------------------------
// Generation

export type Method = 'base' | 'pref' | 'la' | 'amulet';
export declare const METHODS: readonly Method[];

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** Options shared by generate() and compare(). Give `messages` or `prompt`.
 *  The names are those of src/schema.js (tests/node/schema.test.mjs checks that they agree). */
export interface RequestOptions {
  messages?: ChatMessage[];
  /** One user turn. */
  prompt?: string;
  /** System prompt; default: the paper's. '' for none. A system message in `messages` replaces it. */
  system?: string;
  /** The user's preference in plain words: 'concise', 'uplifting', 'explain like I'm five', ... */
  preference?: string;
  /** Where the preference sentence goes: 'system' (the paper's, default) or 'user'. */
  placement?: 'system' | 'user';
  /** Amulet game parameters (defaults: alpha 2, lambda 2, eta 10, iterations 60). */
  alpha?: number;
  lambda?: number;
  eta?: number;
  iterations?: number;
  /** Linear Alignment ratio r for method 'la' (default 2). */
  ratio?: number;
  /** 'closed-form' (default, exact and fast) or 'iterative' (the T-step game, for verification). */
  game?: 'closed-form' | 'iterative';
  /** New tokens at most. */
  maxTokens?: number;
  /** 0 (default) is greedy. */
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  /** Adds the n most likely candidates of each step to every chunk. */
  topLogprobs?: number;
  stop?: string | string[];
  /** Keep going past the end-of-sequence token (benchmarks). */
  ignoreEos?: boolean;
  /** When the conversation and maxTokens no longer fit the context: 'error' (default:
   *  CONTEXT_OVERFLOW when the prompt does not fit) or 'truncate-oldest' (the oldest turns are
   *  dropped, the system prompt and the newest turns kept; `droppedTurns` says how many). */
  contextOverflow?: 'error' | 'truncate-oldest';
  /** Stops the generation within one token; the iteration throws an AbortError (code ABORTED). */
  signal?: AbortSignal;
}

export interface GenerateOptions extends RequestOptions {
  /** Default: 'amulet' when a preference is given, else 'base'. */
  method?: Method;
}

export interface CompareOptions extends RequestOptions {
  /** Default ['base', 'pref', 'amulet']; no repeats. */
  methods?: Method[];
}

export interface Candidate {
  id: number;
  text: string;
  prob: number;
}

export interface StepLogprobs {
  base: Candidate[] | null;
  pref: Candidate[] | null;
  combined: Candidate[];
}

export interface TokenChunk {
  done?: undefined;
  token: number;
  /** New text (whole characters; may be '' while a character is split over tokens). */
  text: string;
  logprobs?: StepLogprobs;
}

export type FinishReason = 'stop' | 'length' | 'context_full' | 'aborted';

export interface Timings {
  prefillMs: number;
  /** Tokens run through the model; prompt tokens kept from an earlier request are not. */
  prefillTokens: number;
  /** Prompt tokens whose caches were kept from an earlier request (a conversation), per context. */
  cachedTokensBase: number;
  cachedTokensPref: number;
  decodeMs: number;
  decodeTokensPerS: number;
}

export interface GenerateUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Prompt tokens of the base context and of the preference context. */
  promptTokensBase: number;
  promptTokensPref: number;
  /** Of promptTokens, those whose caches were kept from an earlier request (OpenAI's
   *  prompt_tokens_details.cached_tokens); per context below. */
  cachedTokens: number;
  cachedTokensBase: number;
  cachedTokensPref: number;
}

export interface GenerateDone {
  done: true;
  method: Method;
  /** The whole answer. */
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  usage: GenerateUsage;
  /** Oldest turns left out to fit the context (contextOverflow 'truncate-oldest'). */
  droppedTurns: number;
  timings: Timings;
}

export type GenerateChunk = TokenChunk | GenerateDone;

export interface CompareTokenChunk extends TokenChunk {
  method: Method;
}

export interface MethodResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  usage: { promptTokens: number; completionTokens: number };
}

export interface CompareDone {
  done: true;
  results: Partial<Record<Method, MethodResult>>;
  usage: {
    promptTokensBase: number;
    promptTokensPref: number;
    completionTokens: number;
    cachedTokensBase: number;
    cachedTokensPref: number;
  };
  droppedTurns: number;
  timings: Timings;
}

export type CompareChunk = CompareTokenChunk | CompareDone;

// ---------------------------------------------------------------------------------------------
// OpenAI-shaped chat completions

export interface AmuletParams {
  preference?: string;
  method?: Method;
  alpha?: number;
  lambda?: number;
  eta?: number;
  iterations?: number;
  ratio?: number;
  placement?: 'system' | 'user';
  game?: 'closed-form' | 'iterative';
  system?: string;
  contextOverflow?: 'error' | 'truncate-oldest';
}

export interface ChatCompletionParams {
  messages: ChatMessage[];
  stream?: boolean;
  /** Accepted and ignored (one model per engine). */
  model?: string;
  max_tokens?: number;
  max_completion_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  stop?: string | string[];
  /** Only 1. */
  n?: 1;
  stream_options?: { include_usage?: boolean };
  user?: string;
  amulet?: AmuletParams;
}

export interface ChatCompletionRequestOptions {
  signal?: AbortSignal;
}

export type ChatFinishReason = 'stop' | 'length';

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** cached_tokens: prompt tokens kept from the previous request of a conversation. */
  prompt_tokens_details: { cached_tokens: number };
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    message: { role: 'assistant'; content: string };
    logprobs: null;
    finish_reason: ChatFinishReason;
  }>;
  usage: CompletionUsage;
  /** Non-standard: the engine's timings. */
  timings: Timings;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    delta: { role?: 'assistant'; content?: string };
    logprobs: null;
    finish_reason: ChatFinishReason | null;
  }>;
  /** On the last chunk only. */
  usage?: CompletionUsage;
  timings?: Timings;
}

export interface Chat {
  completions: {
    create(
      params: ChatCompletionParams & { stream: true },
      options?: ChatCompletionRequestOptions,
    ): Promise<AsyncIterable<ChatCompletionChunk>>;
    create(
      params: ChatCompletionParams & { stream?: false },
      options?: ChatCompletionRequestOptions,
    ): Promise<ChatCompletion>;
    create(
      params: ChatCompletionParams,
      options?: ChatCompletionRequestOptions,
    ): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
  };
}

// ---------------------------------------------------------------------------------------------
// Engines

/** What AmuletEngine and the worker proxy have in common. */
export interface Engine {
  readonly info: EngineInfo;
  readonly disposed: boolean;
  /** One method's answer, streamed. Calls on one engine are queued (FIFO). */
  generate(options: GenerateOptions): AsyncGenerator<GenerateChunk, void, undefined>;
  /** Several methods in one batched generation. Queued like generate(). */
  compare(options: CompareOptions): AsyncGenerator<CompareChunk, void, undefined>;
  readonly chat: Chat;
  /** closedFormStrength, in the engine's realm. */
  strength(alpha?: number, lambda?: number, eta?: number, iterations?: number): Promise<number>;
  /** Frees the model; queued and later calls reject with DISPOSED. Idempotent. */
  dispose(): Promise<void>;
}

export declare class AmuletEngine implements Engine {
  private constructor();
  static load(source: ModelSource, options?: LoadOptions): Promise<AmuletEngine>;
  readonly info: EngineInfo;
  readonly disposed: boolean;
  generate(options: GenerateOptions): AsyncGenerator<GenerateChunk, void, undefined>;
  compare(options: CompareOptions): AsyncGenerator<CompareChunk, void, undefined>;
  readonly chat: Chat;
  strength(alpha?: number, lambda?: number, eta?: number, iterations?: number): Promise<number>;
  /** The wasm memory of the engine's realm (grow-only: also its peak), and whether the model
   *  file is held as bytes in JS (a page's main thread) rather than read as needed. */
  memoryUsage(): Promise<MemoryUsage>;
  /** A conversation whose turns reuse the caches of the ones before. */
  createChat(options?: ChatOptions): Conversation;
  dispose(): Promise<void>;
}

export interface MemoryUsage {
  wasmBytes: number;
  fileInMemory: boolean;
  /** KV cache kept for the next request (a conversation's history), within prefixCacheBytes. */
  prefixCacheBytes: number;
  prefixCacheSequences: number;
}

export interface ChatOptions {
  preference?: string;
  method?: Method;
  system?: string;
  placement?: 'system' | 'user';
  /** Default for a chat: 'truncate-oldest' (the oldest turns go when the history outgrows the context). */
  contextOverflow?: 'error' | 'truncate-oldest';
  /** A history to start from. */
  messages?: ChatMessage[];
}

/** A conversation: each turn sends the history, whose caches the engine kept from the last turn. */
export interface Conversation {
  /** The turns so far (a copy). */
  readonly messages: ChatMessage[];
  /** The preference of the next turns (changing it re-reads only the preference context). */
  preference: string | undefined;
  /** One turn; the answer joins the history when it completes (a failed or aborted turn leaves it as it was). */
  send(
    text: string,
    options?: Omit<GenerateOptions, 'messages' | 'prompt'>,
  ): AsyncGenerator<GenerateChunk, void, undefined>;
  /** One turn answered by several methods; the answer of `keep` (default: the chat's method, else amulet) is kept. */
  compare(
    text: string,
    options?: Omit<CompareOptions, 'messages' | 'prompt'> & { keep?: Method },
  ): AsyncGenerator<CompareChunk, void, undefined>;
  /** Forgets the turns; the settings stay. */
  reset(): void;
  /** A new conversation with these settings and a copy of the turns. */
  fork(): Conversation;
}

export interface WorkerEngine extends Engine {
  /** The Worker the engine runs in. */
  readonly worker: WorkerLike;
}

/** What createWorkerEngine needs of a Worker. */
export interface WorkerLike {
  postMessage(message: unknown, transfer: Transferable[]): void;
  addEventListener(type: 'message' | 'error' | 'messageerror', listener: (event: any) => void): void;
  terminate(): void;
}

/**
 * Loads the model in a module Worker running 'amulet-web/worker' and returns the same API,
 * proxied. `worker` null/undefined: one is created from the package and terminated by dispose().
 * ArrayBuffer / Uint8Array sources are transferred (detached on the page).
 */
export declare function createWorkerEngine(
  worker: WorkerLike | null | undefined,
  source: ModelSource,
  options?: Omit<LoadOptions, 'wasm'>,
): Promise<WorkerEngine>;

// ---------------------------------------------------------------------------------------------
// The wasm module and the Amulet strength

/** Instantiates the wasm module of this realm (once; later calls share the promise). */
export declare function initWasm(
  input?: WasmInput,
  options?: { threads?: number | 'auto'; simd?: 'auto' | 'simd128' },
): Promise<void>;
/** Bytes of this realm's wasm memory (grow-only: also its peak); 0 before initWasm. */
export declare function wasmMemoryBytes(): number;

/**
 * The Amulet strength k(alpha, lambda, eta, T): log π = z_p + k·(z_p − z_b). Synchronous;
 * needs the wasm initialised (initWasm or any AmuletEngine.load), else throws NOT_READY.
 * Defaults: 2, 2, 10, 60 (k = 4.6487).
 */
export declare function closedFormStrength(alpha?: number, lambda?: number, eta?: number, iterations?: number): number;

/** closedFormStrength after initialising the wasm when needed. */
export declare function strength(alpha?: number, lambda?: number, eta?: number, iterations?: number): Promise<number>;

export declare const DEFAULT_CACHE_NAME: 'amulet-web-models';

// ---------------------------------------------------------------------------------------------
// Known models (generated from models/models.json by models/catalogue.mjs)

/** A model this project knows: what to fetch and what it weighs, before any download. */
export interface KnownModel {
  /** The manifest's id, e.g. 'qwen2.5-coder-1.5b-instruct-q4_k_m' (`models/fetch.sh <id>`). */
  id: string;
  /** A readable name, e.g. 'Qwen2.5-Coder 1.5B Instruct'. */
  name: string;
  /** The GGUF file name, e.g. 'qwen2.5-coder-1.5b-instruct-q4_k_m.gguf'. */
  file: string;
  /** e.g. '135M', '1.5B'. */
  parameters: string;
  /** general.architecture of the GGUF: 'llama', 'gemma3', 'qwen2'. */
  architecture: string;
  quantization: string;
  /** The file's size. */
  bytes: number;
  /** The file's sha256, lower-case hex. */
  sha256: string;
  license: string;
  /** The https source (a Hugging Face `resolve` URL), or null where the manifest has none. */
  url: string | null;
}

/** The known models, in the manifest's order (frozen). */
export declare const KNOWN_MODELS: ReadonlyArray<Readonly<KnownModel>>;

/** The manifest's default model (SmolLM2-135M-Instruct Q4_1). */
export declare const DEFAULT_MODEL_ID: string;

/** The known models as fresh, mutable objects. */
export declare function knownModels(): KnownModel[];

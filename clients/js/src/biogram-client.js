/**
 * biogram-client.js: the Biogram real-time client, one WebSocket speaking docs/protocol.md.
 *
 * An ES module with no dependencies and no build step. It is the counterpart of
 * the original frontend's src/service/websocket.ts (same frames, same URL), with
 * what that file lacked; the React app can import it as it is.
 *
 *   import { BiogramSocket, sessionTokenSource } from "/static/biogram-client.js";
 *   const client = new BiogramSocket({ getToken: sessionTokenSource({ csrfToken }) });
 *   client.on("message", (message) => render(message));
 *   client.on("state", ({ state, nextAttemptAt }) => showIndicator(state, nextAttemptAt));
 *   client.track(chatId, lastSeqShown);      // what the app already holds of a chat
 *   client.connect();
 *   const pending = client.send(chatId, "Hello"); // {clientMessageId, chatId, text, ...}
 *
 * Authentication. Each connection opens `/ws/chat/?token=<access JWT>`; the
 * token comes from `getToken()`, an async function answering
 * `{token, expiresAt}` (expiresAt in ms since the epoch). The built-in page uses
 * `sessionTokenSource()`, which POSTs to /api/session/token/ with the Django
 * session and its CSRF token; the React app passes a function that calls
 * /api/auth/token/refresh/. Before the token expires the client fetches a new
 * one and sends it in an `auth` frame, so the socket stays open. A token is used
 * (rather than the session cookie alone, which the socket also accepts when
 * `getToken` is left out) so that the page and any other client live by the
 * same rules: expiry, refresh, 4001.
 *
 * Connection. States, announced by the `state` event: "connecting" (an attempt
 * is under way), "connected" (the server's `connect` frame arrived),
 * "reconnecting" (waiting `nextAttemptAt`), "offline" (closed by the app, the
 * browser is offline, or the server refused the credentials). After any close
 * but a deliberate one the client reconnects with exponential backoff and full
 * jitter: delay = random(0, min(capMs, baseMs * 2 ** attempt)), capMs = 30 s. It
 * never retries after close 4001 or 4003 (event `unauthorized`), except once
 * with a fresh token after the server's `token_expired`. A silent connection
 * is pinged, and dropped if it stays silent.
 *
 * Resume. After every `connect` frame the client sends `sync` with what it
 * holds of each chat, its last seq and its rev (see track()). New messages,
 * replayed or live, are emitted once each, in seq order per chat: a duplicate
 * (a seq, so a message id, already delivered) is dropped, a message after a gap
 * is held back and a `sync` asked for that chat.
 *
 * The chat's log (protocol version 2). Every change of a chat's messages (a new
 * message, an edit, a deletion, a restore, a reaction) has the chat's next
 * `rev`. The client keeps, per chat, the rev up to which it holds every change,
 * and for each message the copy with the highest rev: an `update` or `delete`
 * older than the copy held is dropped, a newer one is emitted, and a rev that
 * jumps asks `sync` for that chat. When `sync` says more is left (`hasMore`) the
 * client pages the rest from `GET /api/chats/{id}/changes/?since=` before it
 * emits `synced`. freshest(message) gives the app the newest copy of a message
 * it got from REST meanwhile.
 *
 * Outbox. send() queues the message with a fresh clientMessageId and returns
 * it; it is sent whenever a connection is up (again on every reconnect, with
 * the same clientMessageId, until the server's echo acknowledges it, so a retry
 * never creates a second message). With `storage` (e.g. localStorage) the
 * outbox survives a reload; two tabs that both send a stored item are harmless
 * for the same reason. A message the server refuses for good (too long, not a
 * member...) leaves the outbox with a `failed` event; `rate_limited` and
 * `unavailable` are retried.
 *
 * Changes. edit(), deleteMessage() and react() are sent at once when connected
 * (they answer false otherwise: they are not kept for later, so that a stale
 * edit never overwrites a newer one); their effect comes back as `update` or
 * `delete` like anyone else's, and a refusal as `error` (ref "edit", "delete",
 * "react"). delivered(chatId, seq) reports what the app has shown; the client
 * sends the latest position per chat, at most every deliveredThrottleMs.
 *
 * Methods: connect(), close(), reconnectNow(), send(chatId, text, {replyTo}),
 * pending(chatId), edit(chatId, messageId, text), deleteMessage(chatId, messageId),
 * react(chatId, messageId, emoji, on), delivered(chatId, seq), typing(chatId),
 * stopTyping(chatId), read(chatId, messageId?), track(chatId, seq, rev?),
 * lastSeqOf(chatId), revOf(chatId), freshest(message), on(event, fn). Read-only
 * fields: state, userId, connectionId. The rest is internal.
 *
 * Events (client.on(name, fn) returns a function that unsubscribes):
 *   state {state, attempt, nextAttemptAt, reason}   ready (the `connect` frame's data)
 *   message (message, {replayed})   pending (item)   sent (item, message)   failed (item, error)
 *   update (message)   delete {chatId, messageId, seq, rev}   delivered {chatId, userId, seq}
 *   typing   read   presence {userId, online}   chat {chatId, event}
 *   synced (the `sync` frame's chats, after any REST catch-up)   error (an `error` frame's data)
 *   unauthorized {code}
 */

/**
 * @typedef {import("./protocol.js").Message} Message
 * @typedef {import("./protocol.js").OutboxItem} OutboxItem
 * @typedef {import("./protocol.js").TokenGrant} TokenGrant
 * @typedef {import("./protocol.js").ClientEvents} ClientEvents
 * @typedef {import("./protocol.js").ConnectionState} ConnectionState
 * @typedef {import("./protocol.js").ClientFrame} ClientFrame
 * @typedef {ReturnType<typeof setTimeout> | undefined} Timer
 * @typedef {{reconnect: Timer, refresh: Timer, heartbeat: Timer, outbox: Timer, delivered: Timer}} Timers
 */

export const CLOSE_UNAUTHORIZED = 4001;
export const CLOSE_FORBIDDEN = 4003;
const CLOSE_HEARTBEAT = 4000; // ours: the connection went silent
const RETRYABLE = new Set(["rate_limited", "unavailable"]);
const COPIES_KEPT = 20000; // messages whose latest copy is remembered (the oldest go first)
const CHANGES_PAGE = 200;

/** The wait before reconnect attempt `attempt` (0, 1, 2...): full jitter, capped. */
export function backoffDelay(attempt, { baseMs = 500, capMs = 30000, random = Math.random } = {}) {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** attempt));
}

/** Thrown by a getToken() whose credentials are gone: the user must log in again. */
export class AuthError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "AuthError";
    this.status = status;
  }
}

/**
 * A getToken() for a page served by the server: the Django session buys an access token.
 * @param {{url?: string, csrfToken?: string, fetchImpl?: typeof fetch}} [options]
 * @returns {() => Promise<TokenGrant>}
 */
export function sessionTokenSource({ url = "/api/session/token/", csrfToken, fetchImpl } = {}) {
  const doFetch = fetchImpl || ((input, init) => fetch(input, init));
  return async function getToken() {
    const response = await doFetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken || "", Accept: "application/json" },
    });
    if (response.status === 401 || response.status === 403) {
      throw new AuthError("The session has ended.", response.status);
    }
    if (!response.ok) {
      throw new Error(`The token endpoint answered ${response.status}.`);
    }
    const body = await response.json();
    return { token: body.access, expiresAt: Date.parse(body.expiresAt) };
  };
}

/** A clientMessageId: 32 random hex digits (crypto.randomUUID needs a secure context). */
function newClientMessageId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function defaultUrl() {
  const scheme = globalThis.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${globalThis.location.host}/ws/chat/`;
}

/** @returns {Timers} */
function noTimers() {
  return {
    reconnect: undefined,
    refresh: undefined,
    heartbeat: undefined,
    outbox: undefined,
    delivered: undefined,
  };
}

export class BiogramSocket {
  /**
   * @param {object} options
   * @param {string} [options.url] the socket URL without query (default: this host's /ws/chat/)
   * @param {(() => Promise<TokenGrant>) | null} [options.getToken] see the header
   * @param {{baseMs?: number, capMs?: number}} [options.backoff] reconnect delays
   * @param {number} [options.refreshMarginMs] refresh the token this long before it expires
   *   (at most a quarter of its lifetime)
   * @param {number} [options.pingIntervalMs] ping after this long without a frame
   * @param {number} [options.pongTimeoutMs] drop the connection if the ping gets no answer
   * @param {number} [options.typingThrottleMs] at most one `typing` frame per chat this often;
   *   the server's 3 s expiry counts from the last frame, so keep it well under that
   * @param {Pick<Storage, "getItem" | "setItem"> | null} [options.storage] where the outbox is
   *   kept (e.g. localStorage)
   * @param {string} [options.storageKey] its key there; one per user
   * @param {string} [options.apiBase] the REST API's root, for the changes after a long absence
   * @param {number} [options.deliveredThrottleMs] at most one `delivered` per chat this often
   * @param {typeof WebSocket} [options.WebSocketImpl] the WebSocket class (in Node: the `ws`
   *   package's); default the global one
   * @param {typeof fetch | null} [options.fetchImpl] fetch for the REST catch-up (default global)
   * @param {() => number} [options.random] for the backoff's jitter (tests)
   */
  constructor({
    url,
    getToken = null,
    backoff = {},
    refreshMarginMs = 60000,
    pingIntervalMs = 25000,
    pongTimeoutMs = 10000,
    typingThrottleMs = 500,
    storage = null,
    storageKey = "biogram-outbox",
    apiBase = "/api",
    deliveredThrottleMs = 500,
    WebSocketImpl = globalThis.WebSocket,
    fetchImpl = null,
    random = Math.random,
  } = {}) {
    this.url = url || defaultUrl();
    this.getToken = getToken;
    this.backoff = { baseMs: 500, capMs: 30000, ...backoff, random };
    this.refreshMarginMs = refreshMarginMs;
    this.pingIntervalMs = pingIntervalMs;
    this.pongTimeoutMs = pongTimeoutMs;
    this.typingThrottleMs = typingThrottleMs;
    this.storage = storage;
    this.storageKey = storageKey;
    this.apiBase = apiBase;
    this.deliveredThrottleMs = deliveredThrottleMs;
    this.WebSocketImpl = WebSocketImpl;
    this.fetchImpl = fetchImpl || ((input, init) => globalThis.fetch(input, init));

    /** @type {ConnectionState} */
    this.state = "offline";
    /** @type {string | null} */
    this.userId = null;
    /** @type {string | null} */
    this.connectionId = null;
    this.attempt = 0;
    /** @type {number | null} */
    this.nextAttemptAt = null;
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
    /** @type {WebSocket | null} */
    this.socket = null;
    this.serial = 0; // one per attempt; stale callbacks compare theirs to it
    this.connected = false;
    this.stopped = true;
    /** @type {string | null} */
    this.closeReason = null;
    /** @type {{token: string, expiresAt: number, refreshAt: number} | null} */
    this.token = null;
    /** @type {Timers} */
    this.timers = noTimers();
    this.lastFrameAt = 0;
    /** @type {number | null} */
    this.pingSentAt = null;

    this.lastSeq = new Map(); // chatId -> the highest seq delivered without a gap
    this.held = new Map(); // chatId -> Map(seq -> message) waiting for a gap to fill
    this.revs = new Map(); // chatId -> the rev up to which every change is held
    this.revsAhead = new Map(); // chatId -> Set of revs received past a gap
    this.copies = new Map(); // messageId -> the copy with the highest rev seen
    this.catchingUp = new Set(); // chat ids being paged from REST after a `sync`
    this.deliveredWanted = new Map(); // chatId -> the highest seq shown, to report
    this.deliveredSent = new Map(); // chatId -> {seq, at} of the last report
    this.syncRequests = []; // chat ids of each `sync` in flight, oldest first
    this.outbox = this.loadOutbox();
    this.reads = new Map(); // chatId -> messageId (null: the latest) to send when connected
    this.typingSentAt = new Map();

    if (globalThis.addEventListener) {
      globalThis.addEventListener("online", () => {
        if (!this.stopped && !this.socket) this.reconnectNow();
      });
    }
  }

  // ---------------------------------------------------------------- events

  /**
   * @template {keyof ClientEvents} K
   * @param {K} name
   * @param {(...args: ClientEvents[K]) => void} fn
   * @returns {() => void} unsubscribes
   */
  on(name, fn) {
    const key = String(name);
    const handlers = this.handlers.get(key) || new Set();
    this.handlers.set(key, handlers);
    handlers.add(fn);
    return () => {
      handlers.delete(fn);
    };
  }

  emit(name, ...args) {
    for (const fn of this.handlers.get(name) || []) {
      try {
        fn(...args);
      } catch (error) {
        console.error(`biogram: a "${name}" handler failed`, error);
      }
    }
  }

  // ---------------------------------------------------------------- connection

  /** Connect, and keep reconnecting until close(). */
  connect() {
    this.stopped = false;
    if (!this.socket && !this.timers.reconnect && this.state !== "connecting") this.open();
  }

  /** Close for good (until connect()); the outbox is kept. */
  close() {
    this.stopped = true;
    this.serial += 1;
    this.clearTimers();
    const socket = this.socket;
    if (socket) {
      this.transmit("disconnect", {});
      this.detach(socket);
      socket.close(1000);
    }
    this.setState("offline", { reason: "closed" });
  }

  /** Skip the backoff wait (a "retry now" button, the browser coming back online). */
  reconnectNow() {
    if (this.stopped || this.socket) return;
    clearTimeout(this.timers.reconnect);
    this.timers.reconnect = undefined;
    this.open();
  }

  async open() {
    this.timers.reconnect = undefined;
    const serial = ++this.serial;
    this.setState("connecting");
    let query = "";
    if (this.getToken) {
      try {
        query = `?token=${encodeURIComponent(await this.freshToken())}`;
      } catch (error) {
        if (serial !== this.serial || this.stopped) return;
        if (error instanceof AuthError) {
          this.giveUp(error.status);
        } else {
          this.scheduleReconnect();
        }
        return;
      }
      if (serial !== this.serial || this.stopped) return;
    }
    let socket;
    try {
      socket = new this.WebSocketImpl(this.url + query);
    } catch (error) {
      console.error("biogram: cannot open the socket", error);
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    this.lastFrameAt = Date.now();
    socket.onmessage = (event) => this.receive(socket, event.data);
    socket.onclose = (event) => this.closed(socket, event.code);
    // A failed connection is followed by `close`, which reconnects; Node's `ws` would throw an
    // `error` event nobody listens to.
    socket.onerror = () => {};
  }

  /** The cached token while it has some life left, else a new one from getToken(). */
  async freshToken() {
    if (this.token && this.token.refreshAt > Date.now()) return this.token.token;
    if (!this.getToken) throw new Error("no getToken: the socket relies on the session cookie");
    const issued = Date.now();
    const { token, expiresAt } = await this.getToken();
    const margin = Math.min(this.refreshMarginMs, (expiresAt - issued) / 4);
    this.token = { token, expiresAt, refreshAt: expiresAt - margin };
    return token;
  }

  closed(socket, code) {
    if (socket !== this.socket) return;
    this.detach(socket);
    if (this.stopped) return;
    const reason = this.closeReason;
    this.closeReason = null;
    if (code === CLOSE_UNAUTHORIZED && reason === "token_expired" && this.getToken) {
      this.token = null; // reconnect once more, with a fresh token
    } else if (code === CLOSE_UNAUTHORIZED || code === CLOSE_FORBIDDEN) {
      this.giveUp(code, reason);
      return;
    }
    this.scheduleReconnect();
  }

  /** Forget a socket: what was in flight on it is sent again on the next one. */
  detach(socket) {
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = () => {};
    if (this.socket === socket) this.socket = null;
    this.connected = false;
    this.connectionId = null;
    this.syncRequests = [];
    this.typingSentAt.clear();
    for (const item of this.outbox) item.sentOn = null;
    clearTimeout(this.timers.refresh);
    clearInterval(this.timers.heartbeat);
    clearTimeout(this.timers.outbox);
    clearTimeout(this.timers.delivered);
    this.timers.refresh = this.timers.heartbeat = this.timers.outbox = this.timers.delivered =
      undefined;
  }

  scheduleReconnect() {
    if (globalThis.navigator && globalThis.navigator.onLine === false) {
      this.setState("offline", { reason: "network" }); // the `online` event reconnects
      return;
    }
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.nextAttemptAt = Date.now() + delay;
    this.timers.reconnect = setTimeout(() => this.open(), delay);
    this.setState("reconnecting");
  }

  /** Stop for good (no reconnect): the login ended, or the server refused it. `reason` is the
   * server's `disconnect` reason when it gave one (`logged_out`, `banned`, …). */
  /**
   * @param {number} code
   * @param {string | null} [reason]
   */
  giveUp(code, reason = null) {
    const socket = this.socket;
    if (socket) {
      this.detach(socket);
      socket.close(1000);
    }
    this.stopped = true;
    this.token = null;
    this.clearTimers();
    this.setState("offline", { reason: "unauthorized" });
    this.emit("unauthorized", { code, reason });
  }

  clearTimers() {
    clearTimeout(this.timers.reconnect);
    clearTimeout(this.timers.refresh);
    clearInterval(this.timers.heartbeat);
    clearTimeout(this.timers.outbox);
    clearTimeout(this.timers.delivered);
    this.timers = noTimers();
  }

  /**
   * @param {ConnectionState} state
   * @param {{reason?: string | null}} [details]
   */
  setState(state, { reason = null } = {}) {
    this.state = state;
    if (state !== "reconnecting") this.nextAttemptAt = null;
    this.emit("state", { state, attempt: this.attempt, nextAttemptAt: this.nextAttemptAt, reason });
  }

  // ---------------------------------------------------------------- incoming frames

  receive(socket, raw) {
    if (socket !== this.socket) return;
    this.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(raw);
    } catch {
      return;
    }
    const data = (frame && frame.data) || {};
    switch (frame && frame.type) {
      case "connect":
        if (data.connectionId) this.ready(data);
        else this.emit("presence", { userId: data.userId, online: true });
        break;
      case "disconnect":
        if (data.reason && data.userId === this.userId) this.closeReason = data.reason;
        else this.emit("presence", { userId: data.userId, online: false });
        break;
      case "message":
        if (data.message) this.receiveMessage(data.message);
        break;
      case "update":
        if (data.message) this.receiveUpdate(data.message);
        break;
      case "delete":
        this.receiveDelete(data);
        break;
      case "sync":
        this.synced(data.chats || {});
        break;
      case "auth":
        this.scheduleRefresh(data.tokenExpiresAt);
        break;
      case "chat":
        if (data.event === "removed") {
          this.lastSeq.delete(data.chatId);
          this.held.delete(data.chatId);
          this.revs.delete(data.chatId);
          this.revsAhead.delete(data.chatId);
        }
        this.emit("chat", data);
        break;
      case "error":
        this.receiveError(data);
        break;
      case "typing":
      case "read":
      case "delivered":
        this.emit(frame.type, data);
        break;
      default:
        break; // pong, and anything newer than this client
    }
  }

  ready(data) {
    this.connected = true;
    this.attempt = 0;
    this.userId = data.userId;
    this.connectionId = data.connectionId;
    this.setState("connected");
    this.emit("ready", data);
    const member = new Set(data.chats || []);
    const chats = {};
    for (const chatId of this.lastSeq.keys()) {
      if (member.has(chatId)) chats[chatId] = this.heldPosition(chatId);
    }
    if (Object.keys(chats).length) this.requestSync(chats);
    this.flushOutbox();
    this.flushReads();
    this.flushDelivered();
    this.scheduleRefresh(data.tokenExpiresAt);
    this.startHeartbeat();
  }

  /** A `message` frame (live or replayed), or a message first heard of otherwise. */
  receiveMessage(message, { live = true } = {}) {
    if (message.senderId === this.userId && message.clientMessageId) {
      const index = this.outbox.findIndex((i) => i.clientMessageId === message.clientMessageId);
      if (index >= 0) {
        const [item] = this.outbox.splice(index, 1);
        this.saveOutbox();
        this.emit("sent", item, message);
      }
    }
    if (live) this.noteRev(message.chatId, message.rev);
    const newer = this.keep(message);
    const chatId = message.chatId;
    const seq = Number(message.seq);
    const last = this.lastSeq.get(chatId);
    if (last === undefined) {
      this.deliver(message, seq);
    } else if (seq <= last) {
      // A duplicate (replayed and live, or a retry's echo), or a newer state of one.
      if (newer) this.emit("update", this.copies.get(message.id));
    } else if (seq === last + 1) {
      this.deliver(message, seq);
      this.drainHeld(chatId);
    } else {
      if (!this.held.has(chatId)) this.held.set(chatId, new Map());
      this.held.get(chatId).set(seq, message);
      if (!this.syncing(chatId)) this.requestSync({ [chatId]: this.heldPosition(chatId) });
    }
  }

  /** An `update`: an existing message edited, restored, or its reactions changed. */
  receiveUpdate(message, { live = true } = {}) {
    if (live) this.noteRev(message.chatId, message.rev);
    const last = this.lastSeq.get(message.chatId);
    if (last !== undefined && Number(message.seq) > last) {
      // Its `message` frame was missed (a gap filled by the server): new to the app.
      this.receiveMessage(message, { live: false });
    } else if (this.keep(message)) {
      this.emit("update", message);
    }
  }

  /** A `delete`: {chatId, messageId, seq, rev}. */
  receiveDelete(data, { live = true } = {}) {
    if (live) this.noteRev(data.chatId, data.rev);
    const known = this.copies.get(data.messageId);
    const copy = {
      ...(known || { chatId: data.chatId, senderId: null, clientMessageId: null }),
      id: data.messageId,
      seq: data.seq,
      rev: data.rev,
      deleted: true,
      text: null,
      reactions: [],
    };
    const last = this.lastSeq.get(data.chatId);
    if (last !== undefined && Number(data.seq) > last) {
      this.receiveMessage(copy, { live: false });
    } else if (this.keep(copy)) {
      this.emit("delete", data);
    }
  }

  /** Remember `copy` if it is newer than the one held; whether it was. */
  keep(copy) {
    if (!copy.id || copy.rev === undefined) return true; // a server older than the chat log
    const known = this.copies.get(copy.id);
    if (known && Number(known.rev) >= Number(copy.rev)) return false;
    this.copies.delete(copy.id); // re-inserted last: the oldest are forgotten first
    this.copies.set(copy.id, copy);
    if (this.copies.size > COPIES_KEPT) {
      for (const id of [...this.copies.keys()].slice(0, COPIES_KEPT / 4)) this.copies.delete(id);
    }
    return true;
  }

  /** The newest copy of a message the app got from REST: its own, or a later one heard live. */
  /**
   * @param {Message} message
   * @returns {Message}
   */
  freshest(message) {
    this.keep(message);
    const known = this.copies.get(message.id);
    return known && Number(known.rev) > Number(message.rev) ? known : message;
  }

  /** A live frame of the chat's log took `rev`: advance, or ask `sync` across a jump. */
  noteRev(chatId, rev) {
    rev = Number(rev);
    if (!rev) return;
    const held = this.revs.get(chatId);
    if (held === undefined) {
      this.revs.set(chatId, rev);
      return;
    }
    if (rev <= held) return;
    if (!this.revsAhead.has(chatId)) this.revsAhead.set(chatId, new Set());
    this.revsAhead.get(chatId).add(rev);
    this.absorbRevs(chatId);
    if (this.revsAhead.has(chatId) && !this.syncing(chatId)) {
      this.requestSync({ [chatId]: this.heldPosition(chatId) });
    }
  }

  /** Raise a chat's rev to `rev` (never lowers it) and take in what was received past it. */
  absorbRevs(chatId, rev = 0) {
    let held = Math.max(this.revs.get(chatId) || 0, Number(rev) || 0);
    const ahead = this.revsAhead.get(chatId);
    if (ahead) {
      while (ahead.has(held + 1)) held += 1;
      for (const r of ahead) if (r <= held) ahead.delete(r);
      if (!ahead.size) this.revsAhead.delete(chatId);
    }
    this.revs.set(chatId, held);
  }

  /** What `sync` says the client holds of a chat: {seq, rev}, or the seq alone. */
  heldPosition(chatId) {
    const seq = String(this.lastSeq.get(chatId) ?? 0);
    const rev = this.revs.get(chatId);
    return rev === undefined ? seq : { seq, rev: String(rev) };
  }

  syncing(chatId) {
    return this.catchingUp.has(chatId) || this.syncRequests.some((ids) => ids.includes(chatId));
  }

  deliver(message, seq) {
    this.lastSeq.set(message.chatId, seq);
    const copy = this.copies.get(message.id);
    const freshest = copy && Number(copy.rev) > Number(message.rev) ? copy : message;
    this.emit("message", freshest, { replayed: this.syncRequests.length > 0 });
  }

  drainHeld(chatId, { acceptGap = false } = {}) {
    const held = this.held.get(chatId);
    if (!held) return;
    for (const seq of [...held.keys()].sort((a, b) => a - b)) {
      const last = this.lastSeq.get(chatId) ?? 0;
      if (seq <= last) held.delete(seq);
      else if (seq === last + 1 || acceptGap) {
        this.deliver(held.get(seq), seq);
        held.delete(seq);
      } else break;
    }
    if (!held.size) this.held.delete(chatId);
  }

  requestSync(chats) {
    if (this.transmit("sync", { chats })) this.syncRequests.push(Object.keys(chats));
  }

  async synced(summary) {
    const asked = this.syncRequests.shift() || Object.keys(summary);
    const serial = this.serial;
    const more = [];
    for (const chatId of asked) {
      const entry = summary[chatId];
      if (entry && entry.rev !== undefined) this.absorbRevs(chatId, entry.rev);
      if (entry && entry.hasMore) more.push(chatId);
      else this.drainHeld(chatId, { acceptGap: true }); // what cannot be filled: show it anyway
    }
    for (const chatId of more) {
      if (await this.catchUp(chatId, summary[chatId].rev, serial)) {
        summary[chatId] = { ...summary[chatId], hasMore: false, rev: String(this.revs.get(chatId)) };
      }
      this.drainHeld(chatId, { acceptGap: true });
    }
    for (const chatId of asked) {
      if (this.revsAhead.has(chatId) && !this.syncing(chatId) && serial === this.serial) {
        this.requestSync({ [chatId]: this.heldPosition(chatId) }); // a jump the sync did not cover
      }
    }
    this.emit("synced", summary);
  }

  /** Page a chat's changes since `since` from REST (after a `sync` with more left); whether
   * everything came. New messages go out in seq order, other messages as update or delete. */
  async catchUp(chatId, since, serial) {
    this.catchingUp.add(chatId);
    try {
      let rev = since;
      for (;;) {
        const page = await this.api(
          `/chats/${encodeURIComponent(chatId)}/changes/?since=${rev}&limit=${CHANGES_PAGE}`,
        );
        if (serial !== this.serial) return false;
        const last = this.lastSeq.get(chatId) ?? 0;
        const fresh = page.results.filter((m) => Number(m.seq) > last);
        fresh.sort((a, b) => Number(a.seq) - Number(b.seq));
        for (const message of fresh) this.receiveMessage(message, { live: false });
        for (const message of page.results) {
          if (Number(message.seq) > last) continue;
          if (message.deleted) {
            const { id: messageId, seq, rev: changed } = message;
            this.receiveDelete({ chatId, messageId, seq, rev: changed }, { live: false });
          } else {
            this.receiveUpdate(message, { live: false });
          }
        }
        this.drainHeld(chatId, { acceptGap: true });
        rev = page.rev;
        if (!page.hasMore) break;
      }
      this.absorbRevs(chatId, rev);
      return true;
    } catch (error) {
      console.warn("biogram: the changes of chat", chatId, "could not be loaded", error);
      return false;
    } finally {
      this.catchingUp.delete(chatId);
    }
  }

  /** A GET of the REST API, with the socket's token when there is one (else the session). */
  async api(path) {
    const headers = { Accept: "application/json" };
    if (this.getToken) headers.Authorization = `Bearer ${await this.freshToken()}`;
    const response = await this.fetchImpl(this.apiBase + path, {
      headers,
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error(`GET ${path} answered ${response.status}`);
    return response.json();
  }

  receiveError(data) {
    const item = data.ref ? this.outbox.find((i) => i.clientMessageId === data.ref) : null;
    if (item && RETRYABLE.has(data.code)) {
      item.sentOn = null;
      clearTimeout(this.timers.outbox);
      this.timers.outbox = setTimeout(() => this.flushOutbox(), data.retryAfterMs || 2000);
    } else if (item) {
      this.outbox.splice(this.outbox.indexOf(item), 1);
      this.saveOutbox();
      this.emit("failed", item, data);
    } else if (data.ref === "auth") {
      this.token = null; // keep the socket; try again a little later
      this.scheduleRefresh(new Date(Date.now() + 10000).toISOString(), { now: true });
    } else {
      this.emit("error", data);
    }
  }

  // ---------------------------------------------------------------- token refresh and heartbeat

  scheduleRefresh(tokenExpiresAt, { now = false } = {}) {
    clearTimeout(this.timers.refresh);
    this.timers.refresh = undefined;
    if (!this.getToken || !tokenExpiresAt) return;
    const expiresAt = Date.parse(tokenExpiresAt);
    const refreshAt = now ? Date.now() + 5000 : (this.token && this.token.refreshAt) || expiresAt;
    const serial = this.serial;
    this.timers.refresh = setTimeout(
      async () => {
        try {
          this.token = null;
          const token = await this.freshToken();
          if (serial === this.serial && this.connected) this.transmit("auth", { token });
        } catch (error) {
          if (error instanceof AuthError) {
            this.giveUp(error.status);
          } else if (serial === this.serial) {
            this.scheduleRefresh(tokenExpiresAt, { now: true });
          }
        }
      },
      Math.max(0, Math.min(refreshAt, expiresAt) - Date.now()),
    );
  }

  /** Ping a silent connection; drop it when the ping gets no answer (a half-open TCP). */
  startHeartbeat() {
    const socket = this.socket;
    if (!socket) return;
    this.pingSentAt = null;
    clearInterval(this.timers.heartbeat);
    this.timers.heartbeat = setInterval(
      () => {
        const now = Date.now();
        if (this.pingSentAt !== null && this.lastFrameAt < this.pingSentAt) {
          // Judged from the ping's time, not the last frame's: a background tab's
          // throttled timer must not take a late check for silence.
          if (now - this.pingSentAt > this.pongTimeoutMs) {
            this.closed(socket, CLOSE_HEARTBEAT);
            socket.close(CLOSE_HEARTBEAT);
          }
        } else if (now - this.lastFrameAt > this.pingIntervalMs && this.transmit("ping", {})) {
          this.pingSentAt = now;
        }
      },
      Math.min(this.pingIntervalMs, this.pongTimeoutMs) / 2,
    );
  }

  // ---------------------------------------------------------------- outgoing

  /** Queue a message (`replyTo`: the id of the message it answers); it is sent now if
   * connected, else on the next connection. */
  /**
   * @param {string | number} chatId
   * @param {string} text
   * @param {{replyTo?: string | number | null}} [options]
   * @returns {OutboxItem}
   */
  send(chatId, text, { replyTo = null } = {}) {
    const item = {
      clientMessageId: newClientMessageId(),
      chatId: String(chatId),
      text,
      replyTo: replyTo === null ? null : String(replyTo),
      createdAt: new Date().toISOString(),
      sentOn: null,
    };
    this.outbox.push(item);
    this.saveOutbox();
    this.typingSentAt.delete(item.chatId); // the server ends the typing state itself
    this.emit("pending", item);
    this.flushOutbox();
    return item;
  }

  /** The messages of a chat still waiting for the server's acknowledgement, oldest first. */
  /**
   * @param {string | number} chatId
   * @returns {OutboxItem[]}
   */
  pending(chatId) {
    return this.outbox.filter((item) => item.chatId === String(chatId));
  }

  /** Call on each keystroke: at most one `typing` frame per chat every typingThrottleMs. */
  /** @param {string | number} chatId */
  typing(chatId) {
    chatId = String(chatId);
    const now = Date.now();
    if (!this.connected || now - (this.typingSentAt.get(chatId) || 0) < this.typingThrottleMs) {
      return;
    }
    if (this.transmit("typing", { chatId })) this.typingSentAt.set(chatId, now);
  }

  /** The typist cleared the composer: end the typing state at once. */
  /** @param {string | number} chatId */
  stopTyping(chatId) {
    chatId = String(chatId);
    if (this.typingSentAt.delete(chatId)) this.transmit("typing", { chatId, isTyping: false });
  }

  /** Change the text of one's own message; false when not connected (nothing is kept). */
  /**
   * @param {string | number} chatId
   * @param {string | number} messageId
   * @param {string} text
   * @returns {boolean} false when not connected (nothing is kept for later)
   */
  edit(chatId, messageId, text) {
    if (!this.connected) return false;
    return this.transmit("edit", { chatId: String(chatId), messageId: String(messageId), text });
  }

  /** Delete one's own message; false when not connected. */
  /**
   * @param {string | number} chatId
   * @param {string | number} messageId
   * @returns {boolean}
   */
  deleteMessage(chatId, messageId) {
    if (!this.connected) return false;
    return this.transmit("delete", { chatId: String(chatId), messageId: String(messageId) });
  }

  /** Add (or with on = false, take back) one's reaction; false when not connected. */
  /**
   * @param {string | number} chatId
   * @param {string | number} messageId
   * @param {string} emoji
   * @param {boolean} [on]
   * @returns {boolean}
   */
  react(chatId, messageId, emoji, on = true) {
    if (!this.connected) return false;
    const data = { chatId: String(chatId), messageId: String(messageId), emoji, on };
    return this.transmit("react", data);
  }

  /** The app has shown chat `chatId` up to `seq`: reported (the latest, throttled). */
  /**
   * @param {string | number} chatId
   * @param {string | number} seq
   */
  delivered(chatId, seq) {
    chatId = String(chatId);
    seq = Number(seq);
    const sent = this.deliveredSent.get(chatId);
    if ((sent && sent.seq >= seq) || (this.deliveredWanted.get(chatId) || 0) >= seq) return;
    this.deliveredWanted.set(chatId, seq);
    this.flushDelivered();
  }

  /** Mark a chat read up to `messageId` (default: its latest message); sent when connected. */
  /**
   * @param {string | number} chatId
   * @param {string | number | null} [messageId] default: the chat's latest
   */
  read(chatId, messageId = null) {
    this.reads.set(String(chatId), messageId === null ? null : String(messageId));
    this.flushReads();
  }

  /** Say the app holds chat `chatId` up to `seq`, and its changes up to `rev` (from REST: the
   * chat object's rev, read before its messages): sync starts after them. */
  /**
   * @param {string | number} chatId
   * @param {string | number} seq
   * @param {string | number | null} [rev]
   */
  track(chatId, seq, rev = null) {
    chatId = String(chatId);
    const current = this.lastSeq.get(chatId);
    if (current === undefined || Number(seq) > current) this.lastSeq.set(chatId, Number(seq));
    if (rev !== null && rev !== undefined) this.absorbRevs(chatId, Number(rev));
    this.drainHeld(chatId);
  }

  /** @param {string | number} chatId */
  lastSeqOf(chatId) {
    return this.lastSeq.get(String(chatId));
  }

  /** @param {string | number} chatId */
  revOf(chatId) {
    return this.revs.get(String(chatId));
  }

  flushOutbox() {
    if (!this.connected) return;
    for (const item of this.outbox) {
      if (item.sentOn === this.serial) continue;
      const data = { chatId: item.chatId, text: item.text, clientMessageId: item.clientMessageId };
      if (item.replyTo) data.replyTo = item.replyTo;
      if (this.transmit("message", data)) item.sentOn = this.serial;
    }
  }

  flushReads() {
    if (!this.connected) return;
    for (const [chatId, messageId] of this.reads) {
      const data = messageId === null ? { chatId } : { chatId, messageId };
      if (this.transmit("read", data)) this.reads.delete(chatId);
    }
  }

  flushDelivered() {
    if (!this.connected) return;
    const now = Date.now();
    let wait = 0;
    for (const [chatId, seq] of this.deliveredWanted) {
      const sent = this.deliveredSent.get(chatId);
      const due = sent ? sent.at + this.deliveredThrottleMs : now;
      if (due > now) {
        wait = wait ? Math.min(wait, due - now) : due - now;
      } else if (this.transmit("delivered", { chatId, seq: String(seq) })) {
        this.deliveredSent.set(chatId, { seq, at: now });
        this.deliveredWanted.delete(chatId);
      }
    }
    if (wait && !this.timers.delivered) {
      // A chat waits at most its throttle; one reported later waits longer than this timer.
      this.timers.delivered = setTimeout(() => {
        this.timers.delivered = undefined;
        this.flushDelivered();
      }, wait);
    }
  }

  transmit(type, data) {
    const socket = this.socket;
    if (!socket || socket.readyState !== 1) return false;
    socket.send(JSON.stringify({ type, data }));
    return true;
  }

  loadOutbox() {
    if (!this.storage) return [];
    try {
      const items = JSON.parse(this.storage.getItem(this.storageKey) || "[]");
      return Array.isArray(items) ? items.map((item) => ({ ...item, sentOn: null })) : [];
    } catch {
      return [];
    }
  }

  saveOutbox() {
    if (!this.storage) return;
    const items = this.outbox.map(({ clientMessageId, chatId, text, replyTo, createdAt }) => ({
      clientMessageId,
      chatId,
      text,
      replyTo: replyTo || null,
      createdAt,
    }));
    try {
      this.storage.setItem(this.storageKey, JSON.stringify(items));
    } catch (error) {
      console.warn("biogram: the outbox could not be saved", error);
    }
  }
}

/**
 * The seed's Messages hooks, rewritten on the client package: the code of
 * docs/migrating-from-the-node-server.md, which quotes it.
 *
 * The seed's `src/service/websocket.ts` (as seed/000_ae30f9ea618c3e14.txt describes it) opened
 * `ws://localhost:3001?token=…&userId=…` with the token and user id found in localStorage,
 * reconnected on close, and handed every frame to MessagesPage.tsx and ChatBox.tsx, which
 * appended each `message`, showed "typing" for 3 seconds after each `typing`, sent `read`, and
 * showed a green "Connected" dot between `connect` and `disconnect`. Here the same hooks sit on
 * BiogramSocket, which adds what the Node server never asked of a client: tokens of this
 * server, refreshed through `auth`; resume with `sync`; de-duplication; an outbox.
 *
 * Type-checked with the package (`npm run typecheck`, part of `make test`), and every block the
 * guide quotes from it is checked to be here word for word: the guide cannot drift from the
 * client's real API.
 */

import { useEffect, useMemo, useRef, useState } from "react";

import { AuthError, BiogramSocket } from "@biogram/client";
import type {
  Chat,
  ChatPage,
  ConnectionState,
  HistoryPage,
  Id,
  Message,
  OutboxItem,
  RestError,
  Seq,
  TokenGrant,
} from "@biogram/client/protocol";

// ---------------------------------------------------------------- tokens and ids of this server

/** Where the app keeps the tokens it got from this server's `POST /api/auth/token/`. */
export interface TokenStore {
  access(): TokenGrant | null;
  refresh(): string | null;
  save(access: string, refresh: string | null): void;
  forgetAccess(): void;
  clear(): void;
}

/** When a JWT expires, in ms since the epoch (its `exp` claim). */
export function expiryOf(jwt: string): number {
  const payload = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  return payload.exp * 1000;
}

/** A TokenStore in localStorage (read when called, never at import). */
export function localTokenStore(prefix = "biogram"): TokenStore {
  const storage = () => window.localStorage;
  return {
    access() {
      const token = storage().getItem(`${prefix}.access`);
      return token ? { token, expiresAt: expiryOf(token) } : null;
    },
    refresh: () => storage().getItem(`${prefix}.refresh`),
    save(access, refresh) {
      storage().setItem(`${prefix}.access`, access);
      if (refresh) storage().setItem(`${prefix}.refresh`, refresh);
    },
    forgetAccess: () => storage().removeItem(`${prefix}.access`),
    clear() {
      storage().removeItem(`${prefix}.access`);
      storage().removeItem(`${prefix}.refresh`);
    },
  };
}

/** A REST answer other than 2xx: its status and the server's `{detail, code}`. */
export class RestFailure extends Error {
  constructor(
    readonly status: number,
    readonly body: Partial<RestError>,
  ) {
    super(body.detail || `HTTP ${status}`);
  }
}

/** Log in against this server and keep its tokens; answers the user's id here (a string). */
export async function logIn(
  apiBase: string,
  store: TokenStore,
  username: string,
  password: string,
): Promise<Id> {
  const response = await fetch(`${apiBase}/auth/token/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) throw new RestFailure(response.status, await response.json());
  const tokens: { access: string; refresh: string } = await response.json();
  store.save(tokens.access, tokens.refresh);
  const me = await api<{ id: Id; username: string }>(apiBase, store, "/me/");
  return me.id;
}

const sources = new WeakMap<TokenStore, () => Promise<TokenGrant>>(); // one per store

/**
 * getToken for the socket and the REST calls: the stored access token while it is fresh, else a
 * new one from the refresh endpoint (SimpleJWT rotates the refresh token: keep the new one). A
 * refused refresh (401 `token_not_valid`) means the login ended: AuthError, and the client stops.
 */
export function refreshingTokenSource(
  apiBase: string,
  store: TokenStore,
): () => Promise<TokenGrant> {
  const known = sources.get(store);
  if (known) return known;
  let refreshing: Promise<TokenGrant> | null = null; // one refresh at a time: each rotates
  const refresh = async (): Promise<TokenGrant> => {
    const token = store.refresh();
    if (!token) throw new AuthError("Not logged in.", 401);
    const response = await fetch(`${apiBase}/auth/token/refresh/`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh: token }),
    });
    if (response.status === 401) {
      store.clear();
      throw new AuthError("The login has ended.", 401);
    }
    if (!response.ok) throw new Error(`refresh answered ${response.status}`);
    const body: { access: string; refresh?: string } = await response.json();
    store.save(body.access, body.refresh ?? token);
    return { token: body.access, expiresAt: expiryOf(body.access) };
  };
  const source = async () => {
    const current = store.access();
    if (current && current.expiresAt - Date.now() > 30_000) return current;
    refreshing ??= refresh().finally(() => (refreshing = null));
    return refreshing;
  };
  sources.set(store, source);
  return source;
}

/**
 * A REST call with the access token. A 401 `token_not_valid` (the token expired on the way)
 * is refreshed once and retried; anything else not 2xx throws RestFailure.
 */
export async function api<T>(
  apiBase: string,
  store: TokenStore,
  path: string,
  { method = "GET", body }: { method?: string; body?: unknown } = {},
): Promise<T> {
  const getToken = refreshingTokenSource(apiBase, store);
  const url = /^https?:/.test(path) ? path : apiBase + path; // `next` links are absolute
  for (let attempt = 0; ; attempt += 1) {
    const { token } = await getToken();
    const response = await fetch(url, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.ok) return (response.status === 204 ? undefined : await response.json()) as T;
    const failure: Partial<RestError> = await response.json().catch(() => ({}));
    if (response.status === 401 && failure.code === "token_not_valid" && attempt === 0) {
      store.forgetAccess();
      continue;
    }
    throw new RestFailure(response.status, failure);
  }
}

// ---------------------------------------------------------------- REST: what changed

/** Every chat of the user: `GET /api/chats/` is a cursor-paginated list; follow `next`. */
export async function listChats(apiBase: string, store: TokenStore): Promise<Chat[]> {
  const chats: Chat[] = [];
  for (let path: string | null = "/chats/?limit=200"; path; ) {
    const page: ChatPage = await api<ChatPage>(apiBase, store, path);
    chats.push(...page.results);
    path = page.next;
  }
  return chats;
}

/** The latest page of a chat's history, and the chat's `rev` read before it (for `sync`). */
export async function loadChat(
  apiBase: string,
  store: TokenStore,
  chatId: Id,
): Promise<{ chat: Chat; messages: Message[]; older: string | null }> {
  const chat = await api<Chat>(apiBase, store, `/chats/${chatId}/`);
  const page = await api<HistoryPage>(apiBase, store, `/chats/${chatId}/messages/?limit=50`);
  return { chat, messages: page.results, older: page.previous };
}

export const USER_SEARCH_MIN = 2;

/** Users to start a chat with: the server answers 400 below 2 non-blank characters. */
export async function searchUsers(
  apiBase: string,
  store: TokenStore,
  term: string,
): Promise<{ id: Id; username: string }[]> {
  const search = term.trim();
  if (search.length < USER_SEARCH_MIN) return [];
  return api(apiBase, store, `/users/?search=${encodeURIComponent(search)}`);
}

// ---------------------------------------------------------------- the socket

/** One client for the app (was: `new WebSocket(url)` in websocket.ts). */
export function useBiogramSocket(url: string, apiBase: string, store: TokenStore): BiogramSocket {
  const client = useMemo(
    () =>
      new BiogramSocket({
        url,
        apiBase,
        getToken: refreshingTokenSource(apiBase, store),
        storage: window.localStorage, // the outbox survives a reload
      }),
    [url, apiBase, store],
  );
  useEffect(() => {
    client.connect();
    return () => client.close();
  }, [client]);
  return client;
}

/** The "Connected" indicator (was: a flag set on `connect` and cleared on `disconnect`). */
export function useConnectionState(client: BiogramSocket): ConnectionState {
  const [state, setState] = useState<ConnectionState>(client.state);
  useEffect(() => client.on("state", ({ state: next }) => setState(next)), [client]);
  return state;
}

/** The login ended (logout elsewhere, ban, refresh refused): back to the login form. */
export function useLoggedOut(client: BiogramSocket, onLoggedOut: () => void): void {
  useEffect(() => client.on("unauthorized", () => onLoggedOut()), [client, onLoggedOut]);
}

// ---------------------------------------------------------------- a chat's messages

/**
 * A chat's messages (was: append every `message` frame, and the optimistic copy besides).
 * The server echoes your own message: that echo is the acknowledgement, so the pending copy
 * leaves `pending` when it arrives (`sent`) and the stored one arrives as a `message`, once.
 * Edits, deletions and reactions replace the message by id (the copy with the highest rev).
 * `initial` is the history page loaded with `loadChat`, and `rev` the chat's rev read before it.
 */
export function useChatMessages(client: BiogramSocket, chatId: Id, initial: Message[], rev: Seq) {
  const [messages, setMessages] = useState<Message[]>([]);
  const [pending, setPending] = useState<OutboxItem[]>([]);

  useEffect(() => {
    setMessages(initial.map((m) => client.freshest(m)));
    setPending(client.pending(chatId));
    const last = initial[initial.length - 1];
    client.track(chatId, last ? last.seq : "0", rev); // `sync` resumes after these

    const upsert = (message: Message) => {
      if (message.chatId !== chatId) return;
      setMessages((shown) =>
        [...shown.filter((m) => m.id !== message.id), message].sort(
          (a, b) => Number(a.seq) - Number(b.seq),
        ),
      );
    };
    const forget = (item: OutboxItem) =>
      setPending((items) => items.filter((i) => i.clientMessageId !== item.clientMessageId));
    const unsubscribe = [
      client.on("message", (message) => {
        if (message.chatId !== chatId) return;
        upsert(message);
        client.delivered(chatId, message.seq); // shown on this device
      }),
      client.on("update", upsert),
      client.on("delete", ({ chatId: chat, messageId, rev: changed }) => {
        if (chat !== chatId) return;
        setMessages((shown) =>
          shown.map((m) =>
            m.id === messageId
              ? { ...m, deleted: true, text: null, reactions: [], rev: changed }
              : m,
          ),
        );
      }),
      client.on("pending", (item) => {
        if (item.chatId === chatId) setPending((items) => [...items, item]);
      }),
      client.on("sent", forget),
      client.on("failed", forget), // refused for good: say so beside the composer
    ];
    return () => unsubscribe.forEach((off) => off());
  }, [client, chatId, initial, rev]);

  return {
    messages,
    pending,
    send: (text: string, replyTo: Id | null = null) => client.send(chatId, text, { replyTo }),
    markRead: () => client.read(chatId), // up to the chat's latest message
  };
}

// ---------------------------------------------------------------- typing, presence, receipts

/**
 * Who is typing (was: show on every `typing`, hide 3 s later). A `typing` frame now also says
 * stop (`isTyping: false`), which the server sends itself when the typist sends, leaves, or is
 * silent for 3 s: hide on it; the timer only covers a lost one.
 */
export function useTyping(client: BiogramSocket, chatId: Id): Id[] {
  const [typists, setTypists] = useState<Id[]>([]);
  const timers = useRef(new Map<Id, ReturnType<typeof setTimeout>>());
  useEffect(() => {
    const hide = (userId: Id) => setTypists((ids) => ids.filter((id) => id !== userId));
    return client.on("typing", ({ chatId: chat, userId, isTyping, expiresInMs }) => {
      if (chat !== chatId) return;
      clearTimeout(timers.current.get(userId));
      if (!isTyping) {
        hide(userId);
        return;
      }
      timers.current.set(
        userId,
        setTimeout(() => hide(userId), expiresInMs + 1000),
      );
      setTypists((ids) => (ids.includes(userId) ? ids : [...ids, userId]));
    });
  }, [client, chatId]);
  return typists;
}

/**
 * Who is online (was: `connect` / `disconnect` meant "my socket opened / closed"). The first
 * `connect` of a connection is yours (it has `connectionId`; the client emits it as `ready`,
 * with `online`: who shares a chat with you and is connected now); every later `connect` /
 * `disconnect` is another user's presence (the client emits `presence`).
 */
export function useOnline(client: BiogramSocket): Set<Id> {
  const [online, setOnline] = useState<Set<Id>>(() => new Set());
  useEffect(() => {
    const offReady = client.on("ready", (data) => setOnline(new Set(data.online)));
    const offPresence = client.on("presence", ({ userId, online: up }) =>
      setOnline((ids) => {
        const next = new Set(ids);
        if (up) next.add(userId);
        else next.delete(userId);
        return next;
      }),
    );
    return () => {
      offReady();
      offPresence();
    };
  }, [client]);
  return online;
}

/**
 * How far each member has read and received a chat (for "Seen" and ✓✓), from the chat object's
 * members, then from `read` and `delivered` frames. Positions are seqs: compare as numbers.
 */
export function useReceipts(client: BiogramSocket, chat: Chat) {
  const [read, setRead] = useState<Map<Id, number>>(new Map());
  const [delivered, setDelivered] = useState<Map<Id, number>>(new Map());
  useEffect(() => {
    setRead(new Map(chat.members.map((m) => [m.id, Number(m.lastReadSeq)])));
    setDelivered(new Map(chat.members.map((m) => [m.id, Number(m.lastDeliveredSeq)])));
    const raise = (positions: Map<Id, number>, userId: Id, seq: Seq) =>
      Number(seq) > (positions.get(userId) ?? 0)
        ? new Map(positions).set(userId, Number(seq))
        : positions;
    const offRead = client.on("read", ({ chatId, userId, seq }) => {
      if (chatId !== chat.id) return;
      setRead((positions) => raise(positions, userId, seq));
      setDelivered((positions) => raise(positions, userId, seq)); // a read is a delivery too
    });
    const offDelivered = client.on("delivered", ({ chatId, userId, seq }) => {
      if (chatId === chat.id) setDelivered((positions) => raise(positions, userId, seq));
    });
    return () => {
      offRead();
      offDelivered();
    };
  }, [client, chat]);
  return { read, delivered };
}

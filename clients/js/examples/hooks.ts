/**
 * The Messages page's hooks, rewritten on the client package (docs/migrating-from-the-node-server.md).
 *
 * The seed's websocket.ts opened `ws://localhost:3001?token=…&userId=…` with the token and user
 * id from localStorage, reconnected on close, and handed every frame to the page; MessagesPage
 * and ChatBox appended each `message` frame, showed `typing` for 3 seconds and a green
 * "Connected" dot. Here the same hooks sit on BiogramSocket, which adds what the Node server
 * never needed: token refresh, resume with `sync`, de-duplication, an outbox.
 *
 * This file is type-checked with the package (`npm run typecheck`, part of `make test`), so the
 * guide cannot drift from the client's real API.
 */

import { useEffect, useMemo, useRef, useState } from "react";

import { AuthError, BiogramSocket } from "../src/biogram-client.js";
import type {
  ConnectionState,
  Id,
  Message,
  OutboxItem,
  TokenGrant,
} from "../src/protocol.js";

/** Where the app keeps the tokens it got from `POST /api/auth/token/`. */
export interface TokenStore {
  access(): { token: string; expiresAt: number } | null;
  refresh(): string | null;
  save(access: string, refresh: string | null): void;
}

/** When a JWT expires, in ms since the epoch (its `exp` claim). */
export function expiryOf(jwt: string): number {
  const payload = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  return payload.exp * 1000;
}

/**
 * getToken for the React app: the stored access token while it is fresh, else a new one from
 * the refresh endpoint (SimpleJWT rotates the refresh token: keep the new one). A refusal
 * (`token_not_valid`) means the login ended: throw AuthError, and the client stops.
 */
export function refreshingTokenSource(apiBase: string, store: TokenStore): () => Promise<TokenGrant> {
  return async () => {
    const current = store.access();
    if (current && current.expiresAt - Date.now() > 30_000) return current;
    const refresh = store.refresh();
    if (!refresh) throw new AuthError("Not logged in.", 401);
    const response = await fetch(`${apiBase}/auth/token/refresh/`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh }),
    });
    if (response.status === 401) throw new AuthError("The login has ended.", 401);
    if (!response.ok) throw new Error(`refresh answered ${response.status}`);
    const body: { access: string; refresh?: string } = await response.json();
    store.save(body.access, body.refresh ?? refresh);
    return { token: body.access, expiresAt: expiryOf(body.access) };
  };
}

/** One client for the app (was: `new WebSocket(url)` in websocket.ts). */
export function useBiogramSocket(url: string, apiBase: string, store: TokenStore): BiogramSocket {
  const client = useMemo(
    () =>
      new BiogramSocket({
        url,
        apiBase,
        getToken: refreshingTokenSource(apiBase, store),
        storage: window.localStorage,
      }),
    [url, apiBase, store],
  );
  useEffect(() => {
    client.connect();
    return () => client.close();
  }, [client]);
  return client;
}

/** The "Connected" indicator (was: onopen / onclose flags). */
export function useConnectionState(client: BiogramSocket): ConnectionState {
  const [state, setState] = useState<ConnectionState>(client.state);
  useEffect(() => client.on("state", ({ state: next }) => setState(next)), [client]);
  return state;
}

/**
 * A chat's messages (was: append every `message` frame, then a second copy for the optimistic
 * one). The server echoes your own message: that echo is the acknowledgement, so the pending
 * copy is dropped when it arrives (`sent`), matched by clientMessageId, never shown twice.
 * Edits, deletions and reactions replace the message by id (the copy with the highest rev).
 */
export function useChatMessages(client: BiogramSocket, chatId: Id, initial: Message[]) {
  const [messages, setMessages] = useState<Message[]>(initial);
  const [pending, setPending] = useState<OutboxItem[]>(() => client.pending(chatId));

  useEffect(() => {
    const last = initial[initial.length - 1];
    client.track(chatId, last ? last.seq : "0", last ? last.rev : undefined);
    const upsert = (message: Message) => {
      if (message.chatId !== chatId) return;
      setMessages((shown) => {
        const others = shown.filter((m) => m.id !== message.id);
        return [...others, message].sort((a, b) => Number(a.seq) - Number(b.seq));
      });
    };
    const unsubscribe = [
      client.on("message", (message) => {
        upsert(message);
        client.delivered(chatId, message.seq);
      }),
      client.on("update", upsert),
      client.on("delete", (data) => {
        if (data.chatId !== chatId) return;
        setMessages((shown) =>
          shown.map((m) =>
            m.id === data.messageId ? { ...m, deleted: true, text: null, reactions: [], rev: data.rev } : m,
          ),
        );
      }),
      client.on("pending", (item) => {
        if (item.chatId === chatId) setPending((items) => [...items, item]);
      }),
      client.on("sent", (item) => {
        setPending((items) => items.filter((i) => i.clientMessageId !== item.clientMessageId));
      }),
      client.on("failed", (item) => {
        setPending((items) => items.filter((i) => i.clientMessageId !== item.clientMessageId));
      }),
    ];
    return () => unsubscribe.forEach((off) => off());
  }, [client, chatId]);

  const send = (text: string, replyTo: Id | null = null) => client.send(chatId, text, { replyTo });
  return { messages, pending, send };
}

/**
 * Who is typing (was: show on `typing`, hide after 3 s). The server sends `isTyping: false`
 * itself (when the typist sends, leaves, or is silent for 3 s): hide on it, keep a timer only
 * for a lost one.
 */
export function useTyping(client: BiogramSocket, chatId: Id): Id[] {
  const [typists, setTypists] = useState<Id[]>([]);
  const timers = useRef(new Map<Id, ReturnType<typeof setTimeout>>());
  useEffect(
    () =>
      client.on("typing", (data) => {
        if (data.chatId !== chatId || data.userId === client.userId) return;
        clearTimeout(timers.current.get(data.userId));
        if (data.isTyping) {
          timers.current.set(
            data.userId,
            setTimeout(() => setTypists((ids) => ids.filter((id) => id !== data.userId)), data.expiresInMs + 1000),
          );
          setTypists((ids) => (ids.includes(data.userId) ? ids : [...ids, data.userId]));
        } else {
          setTypists((ids) => ids.filter((id) => id !== data.userId));
        }
      }),
    [client, chatId],
  );
  return typists;
}

/**
 * Who is online (was: `connect` / `disconnect` meant "a socket opened / closed"). The first
 * `connect` frame is this connection's own (with `online`: who shares a chat with you and is
 * connected now); later `connect` / `disconnect` frames carry other users' presence.
 */
export function useOnline(client: BiogramSocket): Set<Id> {
  const [online, setOnline] = useState<Set<Id>>(new Set());
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

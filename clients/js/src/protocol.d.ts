/**
 * The Biogram real-time protocol, version 2 (docs/protocol.md), as TypeScript types: every frame
 * each way, the message and chat objects, the error codes and the close codes.
 *
 * All ids, seqs and revs are strings of digits; all times are ISO 8601 UTC with milliseconds.
 * biogram-client.js is checked against these types by `tsc --checkJs` (clients/js/tsconfig.json).
 */

export type Id = string;
export type Seq = string;
export type Rev = string;
export type IsoTime = string;

// ---------------------------------------------------------------- objects

export interface Reaction {
  emoji: string;
  userIds: Id[];
}

export interface ReplyTo {
  id: Id;
  seq: Seq;
}

/** A message as frames and REST give it; a client keeps the copy with the highest `rev`. */
export interface Message {
  id: Id;
  chatId: Id;
  seq: Seq;
  rev: Rev;
  senderId: Id | null;
  /** null once deleted */
  text: string | null;
  clientMessageId: string | null;
  createdAt: IsoTime;
  deleted: boolean;
  editedAt: IsoTime | null;
  replyTo: ReplyTo | null;
  reactions: Reaction[];
}

export interface Member {
  id: Id;
  username: string;
  lastReadSeq: Seq;
  lastDeliveredSeq: Seq;
}

/** A chat as the caller sees it (REST, and the `chat` `updated` frame). */
export interface Chat {
  id: Id;
  title: string;
  isDirect: boolean;
  createdAt: IsoTime;
  members: Member[];
  lastMessage: Message | null;
  unreadCount: number;
  lastReadSeq: Seq;
  rev: Rev;
  notificationsMuted: boolean;
}

/** `GET /api/chats/`: a page of the chat list; follow `next` to the end. */
export interface ChatPage {
  next: string | null;
  previous: string | null;
  results: Chat[];
}

/** `GET /api/chats/{id}/messages/` */
export interface HistoryPage {
  results: Message[];
  hasMore: boolean;
  next: string | null;
  previous: string | null;
}

/** `GET /api/chats/{id}/changes/?since=` */
export interface ChangesPage {
  results: Message[];
  rev: Rev;
  hasMore: boolean;
}

/** Every REST error. Token errors keep SimpleJWT's codes (`token_not_valid`…). */
export interface RestError {
  detail: string;
  code: ErrorCode | "token_not_valid" | "no_active_account" | "user_inactive" | string;
  errors?: Record<string, unknown>;
  retryAfterMs?: number;
}

// ---------------------------------------------------------------- codes

export type ErrorCode =
  | "bad_request"
  | "unknown_type"
  | "not_found"
  | "not_member"
  | "forbidden"
  | "too_large"
  | "rate_limited"
  | "unauthorized"
  | "unavailable";

/** Close codes: 4001 unauthorized (never retry with the same token), 4003 forbidden, 4008
 * flooding, 4029 too many sockets, 1001 server going away, 1011 server error. */
export type CloseCode = 1000 | 1001 | 1011 | 4001 | 4003 | 4008 | 4029;

/** Why the server closes a socket itself (`disconnect` with the user's own id). */
export type CloseReason =
  | "server_shutdown"
  | "token_expired"
  | "banned"
  | "logged_out";

// ---------------------------------------------------------------- client to server

export interface MessageOut {
  type: "message";
  data: { chatId: Id; text: string; clientMessageId?: string; senderId?: Id; replyTo?: Id };
}
export interface TypingOut {
  type: "typing";
  data: { chatId: Id; isTyping?: boolean; senderId?: Id };
}
export interface ReadOut {
  type: "read";
  data: { chatId: Id; messageId?: Id; userId?: Id };
}
/** A chat's value: the last seq held (version 1), or `{seq, rev}` (version 2). */
export interface SyncOut {
  type: "sync";
  data: { chats: Record<Id, Seq | { seq: Seq; rev: Rev }> };
}
export interface AuthOut {
  type: "auth";
  data: { token: string };
}
export interface PingOut {
  type: "ping";
  data: Record<string, never>;
}
export interface DisconnectOut {
  type: "disconnect";
  data: Record<string, never>;
}
export interface EditOut {
  type: "edit";
  data: { chatId: Id; messageId: Id; text: string };
}
export interface DeleteOut {
  type: "delete";
  data: { chatId: Id; messageId: Id };
}
export interface ReactOut {
  type: "react";
  data: { chatId: Id; messageId: Id; emoji: string; on?: boolean };
}
export interface DeliveredOut {
  type: "delivered";
  data: { chatId: Id; seq: Seq };
}

export type ClientFrame =
  | MessageOut
  | TypingOut
  | ReadOut
  | SyncOut
  | AuthOut
  | PingOut
  | DisconnectOut
  | EditOut
  | DeleteOut
  | ReactOut
  | DeliveredOut;

// ---------------------------------------------------------------- server to client

/** The first frame of a connection. */
export interface ConnectData {
  userId: Id;
  connectionId: string;
  chats: Id[];
  online: Id[];
  serverTime: IsoTime;
  tokenExpiresAt: IsoTime | null;
}
export interface ConnectIn {
  type: "connect";
  data: ConnectData | PresenceData;
}
/** Another user's first connection opened (`connect`) or last one closed (`disconnect`). */
export interface PresenceData {
  userId: Id;
}
export interface DisconnectIn {
  type: "disconnect";
  data: PresenceData | { userId: Id; reason: CloseReason };
}
export interface MessageIn {
  type: "message";
  data: { chatId: Id; senderId: Id; text: string; message: Message };
}
export interface TypingData {
  chatId: Id;
  senderId: Id;
  userId: Id;
  isTyping: boolean;
  expiresInMs: number;
}
export interface TypingIn {
  type: "typing";
  data: TypingData;
}
export interface ReadData {
  chatId: Id;
  userId: Id;
  messageId: Id | null;
  seq: Seq;
  readAt: IsoTime | null;
}
export interface ReadIn {
  type: "read";
  data: ReadData;
}
export interface UpdateIn {
  type: "update";
  data: { chatId: Id; message: Message };
}
export interface DeleteData {
  chatId: Id;
  messageId: Id;
  seq: Seq;
  rev: Rev;
}
export interface DeleteIn {
  type: "delete";
  data: DeleteData;
}
export interface DeliveredData {
  chatId: Id;
  userId: Id;
  seq: Seq;
}
export interface DeliveredIn {
  type: "delivered";
  data: DeliveredData;
}
export interface ChatEventData {
  chatId: Id;
  event: "added" | "removed" | "updated";
  /** With `updated`: the chat as this user sees it. */
  chat?: Chat;
}
export interface ChatIn {
  type: "chat";
  data: ChatEventData;
}
export interface SyncSummary {
  lastSeq: Seq;
  rev: Rev;
  hasMore: boolean;
}
export interface SyncIn {
  type: "sync";
  data: { chats: Record<Id, SyncSummary> };
}
export interface AuthIn {
  type: "auth";
  data: { tokenExpiresAt: IsoTime };
}
export interface PongIn {
  type: "pong";
  data: { serverTime: IsoTime };
}
export interface ErrorData {
  code: ErrorCode;
  message: string;
  /** The offending frame's clientMessageId or type; null for a frame that is not JSON. */
  ref: string | null;
  retryAfterMs?: number;
}
export interface ErrorIn {
  type: "error";
  data: ErrorData;
}

export type ServerFrame =
  | ConnectIn
  | DisconnectIn
  | MessageIn
  | TypingIn
  | ReadIn
  | UpdateIn
  | DeleteIn
  | DeliveredIn
  | ChatIn
  | SyncIn
  | AuthIn
  | PongIn
  | ErrorIn;

// ---------------------------------------------------------------- biogram-client.js

/** What `getToken()` answers: an access token and when it expires (ms since the epoch). */
export interface TokenGrant {
  token: string;
  expiresAt: number;
}

/** A message in the client's outbox, sent (again on every reconnect) until acknowledged. */
export interface OutboxItem {
  clientMessageId: string;
  chatId: Id;
  text: string;
  replyTo: Id | null;
  createdAt: IsoTime;
  /** The connection it was last sent on; null: not sent on the current one. */
  sentOn: number | null;
}

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "offline";

export interface StateChange {
  state: ConnectionState;
  attempt: number;
  nextAttemptAt: number | null;
  reason: string | null;
}

/** `client.on(name, handler)`: each event and the arguments its handlers get. */
export interface ClientEvents {
  state: [StateChange];
  ready: [ConnectData];
  message: [Message, { replayed: boolean }];
  pending: [OutboxItem];
  sent: [OutboxItem, Message];
  failed: [OutboxItem, ErrorData];
  update: [Message];
  delete: [DeleteData];
  delivered: [DeliveredData];
  typing: [TypingData];
  read: [ReadData];
  presence: [{ userId: Id; online: boolean }];
  chat: [ChatEventData];
  synced: [Record<Id, SyncSummary>];
  error: [ErrorData];
  unauthorized: [{ code: number; reason: string | null }];
}

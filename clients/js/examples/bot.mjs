// A bot in Node on the client package: answers each new message of its chats with its length.
//
//   BIOGRAM_URL=http://127.0.0.1:8000 BIOGRAM_REFRESH=<a refresh token of the bot's login> \
//     node clients/js/examples/bot.mjs
//
// Type-checked with the package (tsconfig.json); docs/migrating-from-the-node-server.md quotes it.

import WebSocket from "ws";

import { AuthError, BiogramSocket } from "@biogram/client";

/**
 * @typedef {import("@biogram/client/protocol").Chat} Chat
 * @typedef {import("@biogram/client/protocol").TokenGrant} TokenGrant
 */

const base = process.env.BIOGRAM_URL || "http://127.0.0.1:8000";
let refresh = process.env.BIOGRAM_REFRESH || "";
/** @type {TokenGrant | null} */
let access = null;

/** An access token of the bot's login: the one held while it has a minute left, else a new one. */
async function getToken() {
  if (access && access.expiresAt - Date.now() > 60_000) return access;
  const response = await fetch(`${base}/api/auth/token/refresh/`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh }),
  });
  if (response.status === 401) throw new AuthError("The bot's login has ended.", 401);
  const body = /** @type {{access: string, refresh?: string}} */ (await response.json());
  refresh = body.refresh || refresh; // SimpleJWT rotates it
  const { exp } = JSON.parse(Buffer.from(body.access.split(".")[1], "base64url").toString());
  access = { token: body.access, expiresAt: exp * 1000 };
  return access;
}

/** @param {string} path */
async function get(path) {
  const { token } = await getToken();
  const response = await fetch(`${base}/api${path}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) throw new Error(`GET ${path} answered ${response.status}`);
  return response.json();
}

const client = new BiogramSocket({
  url: `${base.replace(/^http/, "ws")}/ws/chat/`,
  apiBase: `${base}/api`,
  WebSocketImpl: WebSocket, // the `ws` package: Node 20 has no WebSocket of its own
  getToken,
});

client.on("ready", async ({ userId, chats }) => {
  console.log(`connected as user ${userId}, in chats ${chats.join(", ")}`);
  for (const chatId of chats) {
    if (client.lastSeqOf(chatId) !== undefined) continue; // held since an earlier connection
    // Answer only what comes next; every later reconnect `sync`s from here, missing nothing.
    const chat = /** @type {Chat} */ (await get(`/chats/${chatId}/`));
    client.track(chatId, chat.lastMessage ? chat.lastMessage.seq : "0", chat.rev);
  }
});

client.on("message", (message) => {
  if (message.senderId === client.userId || message.deleted) return; // its own echo: the ack
  const text = `${(message.text || "").length} characters`;
  client.send(message.chatId, text, { replyTo: message.id });
});

client.on("unauthorized", ({ code, reason }) => {
  console.error(`refused (${code}, ${reason || "no reason"}): log the bot in again`);
  process.exit(1);
});

client.connect();

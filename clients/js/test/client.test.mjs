// The client package against a live server, in Node with the `ws` package.
//
// Run by messaging/tests/test_js_client.py (part of `make test`), which starts the server and
// passes: BIOGRAM_URL, BIOGRAM_ALICE, BIOGRAM_ALICE_2 and BIOGRAM_BOB (refresh tokens of logins
// of the users alice and bob), BIOGRAM_CHAT (their chat), BIOGRAM_CONTROL (an HTTP endpoint of the test: POST /restart?messages=N kills the server
// with SIGKILL, stores N messages from bob while it is down, and starts it again on the same port).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import WebSocket from "ws";

import { BiogramSocket } from "../src/biogram-client.js";

const BASE = process.env.BIOGRAM_URL;
const CHAT = process.env.BIOGRAM_CHAT;
const CONTROL = process.env.BIOGRAM_CONTROL;
const WS_URL = `${BASE.replace(/^http/, "ws")}/ws/chat/`;

/** One login (a refresh token from the test); SimpleJWT rotates it at each refresh. */
class Login {
  constructor(refresh) {
    this.refresh = refresh;
    this.calls = 0;
  }

  /** A fresh access token from the server's refresh endpoint. */
  async access() {
    this.calls += 1;
    const response = await fetch(`${BASE}/api/auth/token/refresh/`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh: this.refresh }),
    });
    assert.equal(response.status, 200, "refresh");
    const body = await response.json();
    this.refresh = body.refresh || this.refresh;
    return body.access;
  }
}

const logins = {
  alice: new Login(process.env.BIOGRAM_ALICE),
  alice2: new Login(process.env.BIOGRAM_ALICE_2),
  bob: new Login(process.env.BIOGRAM_BOB),
};

/** When a JWT expires, in ms since the epoch. */
function expiryOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString()).exp * 1000;
}

/** A connected client of `username`, recording every event. */
async function client(login, options = {}) {
  const socket = new BiogramSocket({
    url: WS_URL,
    apiBase: `${BASE}/api`,
    getToken: async () => {
      const token = await login.access();
      return { token, expiresAt: expiryOf(token) };
    },
    WebSocketImpl: /** @type {any} */ (WebSocket),
    backoff: { baseMs: 100, capMs: 1000 },
    deliveredThrottleMs: 50,
    ...options,
  });
  socket.events = [];
  for (const name of ["state", "message", "sent", "typing", "read", "delivered", "error", "synced"]) {
    socket.on(/** @type {any} */ (name), (...args) => socket.events.push([name, ...args]));
  }
  const ready = new Promise((resolve) => socket.on("ready", resolve));
  socket.connect();
  await ready;
  return socket;
}

/** Wait until `predicate()` holds (checked every 20 ms), or fail after `ms`. */
async function until(predicate, what, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const messagesOf = (socket, chatId = CHAT) =>
  socket.events.filter(([name, m]) => name === "message" && m.chatId === chatId).map(([, m]) => m);

describe("BiogramSocket against a live server", () => {
  let alice;
  let bob;

  before(async () => {
    alice = await client(logins.alice);
    bob = await client(logins.bob);
    alice.track(CHAT, "0", "0");
    bob.track(CHAT, "0", "0");
  });

  after(() => {
    alice.close();
    bob.close();
  });

  test("a message is sent, acknowledged by its echo, and delivered to the other member once", async () => {
    const item = alice.send(CHAT, "hello bob");

    await until(() => alice.events.some(([name, i]) => name === "sent" && i.clientMessageId === item.clientMessageId), "the ack");
    await until(() => messagesOf(bob).some((m) => m.text === "hello bob"), "bob's copy");
    const [, , stored] = alice.events.find(([name, i]) => name === "sent" && i.clientMessageId === item.clientMessageId);
    assert.equal(stored.clientMessageId, item.clientMessageId);
    assert.equal(stored.senderId, alice.userId);
    assert.deepEqual(alice.pending(CHAT), []);
    assert.equal(messagesOf(bob).filter((m) => m.id === stored.id).length, 1);
  });

  test("a retry with the same clientMessageId stores nothing new", async () => {
    const raw = new WebSocket(`${WS_URL}?token=${await logins.alice2.access()}`);
    const frames = [];
    raw.on("message", (data) => frames.push(JSON.parse(data.toString())));
    await new Promise((resolve) => raw.once("open", resolve));
    await until(() => frames.some((f) => f.type === "connect"), "connect");
    const frame = JSON.stringify({ type: "message", data: { chatId: CHAT, text: "only once", clientMessageId: "retry-1" } });
    raw.send(frame);
    raw.send(frame);

    await until(() => frames.filter((f) => f.type === "message" && f.data.message.clientMessageId === "retry-1").length === 2, "two acks");
    const acks = frames.filter((f) => f.type === "message" && f.data.message.clientMessageId === "retry-1");
    assert.equal(acks[0].data.message.id, acks[1].data.message.id);
    raw.close();
    await until(() => messagesOf(bob).some((m) => m.clientMessageId === "retry-1"), "bob's copy");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(messagesOf(bob).filter((m) => m.clientMessageId === "retry-1").length, 1);
  });

  test("typing starts and stops with isTyping false", async () => {
    alice.typing(CHAT);
    await until(() => bob.events.some(([name, d]) => name === "typing" && d.userId === alice.userId && d.isTyping), "typing");
    alice.stopTyping(CHAT);
    await until(() => bob.events.some(([name, d]) => name === "typing" && d.userId === alice.userId && !d.isTyping), "typing stopped");
  });

  test("delivered and read positions reach the sender", async () => {
    const last = messagesOf(bob).at(-1);
    bob.delivered(CHAT, last.seq);
    await until(() => alice.events.some(([name, d]) => name === "delivered" && d.userId === bob.userId && d.seq === last.seq), "delivered");
    bob.read(CHAT);
    await until(() => alice.events.some(([name, d]) => name === "read" && d.userId === bob.userId && d.seq === last.seq), "read");
  });

  test("the token is refreshed through `auth` before it expires: the socket stays open", async () => {
    const connectionId = alice.connectionId;
    const refreshesBefore = logins.alice.calls;
    const lifetimeMs = expiryOf(await logins.alice2.access()) - Date.now();
    assert.ok(lifetimeMs < 20000, "the server runs with short-lived access tokens");

    await new Promise((resolve) => setTimeout(resolve, lifetimeMs + 2000));

    assert.ok(logins.alice.calls > refreshesBefore, "a fresh token was fetched");
    assert.equal(alice.connectionId, connectionId, "the same connection, never closed with 4001");
    assert.equal(alice.state, "connected");
    alice.send(CHAT, "still here");
    await until(() => messagesOf(bob).some((m) => m.text === "still here"), "a message after the old token's expiry");
  });

  test("after the server is killed and restarted, sync brings what was missed, once each, in order", async () => {
    const seenBefore = messagesOf(alice).length;

    const response = await fetch(`${CONTROL}/restart?messages=5`, { method: "POST" });
    assert.equal(response.status, 200, "the test restarted the server");

    await until(() => alice.state === "connected" && messagesOf(alice).length >= seenBefore + 5, "the missed messages", 30000);
    bob.send(CHAT, "live again");
    await until(() => messagesOf(alice).some((m) => m.text === "live again"), "a live message after the restart", 30000);

    const all = messagesOf(alice);
    const seqs = all.map((m) => Number(m.seq));
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "in seq order");
    assert.equal(new Set(seqs).size, seqs.length, "no duplicate");
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => seqs[0] + i), "no hole");
    const missed = all.filter((m) => m.text.startsWith("while you were away"));
    assert.deepEqual(missed.map((m) => m.text), [1, 2, 3, 4, 5].map((n) => `while you were away ${n}`));
  });
});

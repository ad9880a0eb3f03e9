// The client package against a live server, in Node with the `ws` package.
//
// Run by messaging/tests/test_js_client.py (part of `make test`), which starts the server with
// 8-second access tokens and passes:
//   BIOGRAM_URL                  the server, http://127.0.0.1:PORT
//   BIOGRAM_ALICE, BIOGRAM_BOB   refresh tokens of a login of each user (SimpleJWT rotates them)
//   BIOGRAM_ALICE_ID, BIOGRAM_BOB_ID, BIOGRAM_CHAT   their ids, and their chat's (empty at start)
//   BIOGRAM_CONTROL              an HTTP endpoint of the test: POST /kill?messages=N kills the
//                                server with SIGKILL and stores N messages from bob meanwhile (as
//                                another process would); POST /start starts it again on the same
//                                port and database.
// Type-checked with the package (tsconfig.json includes this file).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import WebSocket from "ws";

import { BiogramSocket } from "../src/biogram-client.js";

/**
 * @typedef {import("../src/protocol.js").ClientFrame} ClientFrame
 * @typedef {import("../src/protocol.js").ConnectData} ConnectData
 * @typedef {import("../src/protocol.js").DeliveredData} DeliveredData
 * @typedef {import("../src/protocol.js").ErrorData} ErrorData
 * @typedef {import("../src/protocol.js").HistoryPage} HistoryPage
 * @typedef {import("../src/protocol.js").Message} Message
 * @typedef {import("../src/protocol.js").OutboxItem} OutboxItem
 * @typedef {import("../src/protocol.js").ReadData} ReadData
 * @typedef {import("../src/protocol.js").ServerFrame} ServerFrame
 * @typedef {import("../src/protocol.js").SocketLike} SocketLike
 * @typedef {import("../src/protocol.js").TypingData} TypingData
 */

/** @param {string} name */
function env(name) {
  const value = process.env[name];
  if (!value)
    throw new Error(`${name} is not set: run this through messaging/tests/test_js_client.py`);
  return value;
}

const BASE = env("BIOGRAM_URL");
const CHAT = env("BIOGRAM_CHAT");
const CONTROL = env("BIOGRAM_CONTROL");
const WS_URL = `${BASE.replace(/^http/, "ws")}/ws/chat/`;

/** @param {number} ms */
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Wait until `predicate()` holds (checked every 20 ms), or fail after `ms`.
 * @param {() => unknown} predicate
 * @param {string} what
 * @param {number} [ms]
 */
async function until(predicate, what, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await pause(20);
  }
}

/**
 * When a JWT expires, in ms since the epoch (its `exp` claim).
 * @param {string} jwt
 */
function expiryOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString()).exp * 1000;
}

/** One login: access tokens from the server's refresh endpoint, one request at a time (each
 * rotates the refresh token, so two at once would spend the same one twice). */
class Login {
  /** @param {string} refresh */
  constructor(refresh) {
    this.refresh = refresh;
    this.calls = 0;
    /** @type {Promise<unknown>} */
    this.queue = Promise.resolve();
  }

  /** @returns {Promise<string>} a fresh access token */
  access() {
    const next = this.queue.then(async () => {
      this.calls += 1;
      const response = await fetch(`${BASE}/api/auth/token/refresh/`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh: this.refresh }),
      });
      assert.equal(response.status, 200, "the refresh endpoint answers");
      const body = /** @type {{access: string, refresh?: string}} */ (await response.json());
      this.refresh = body.refresh || this.refresh;
      return body.access;
    });
    this.queue = next.catch(() => {});
    return next;
  }
}

/**
 * A `ws` WebSocket that records each frame the client sends (with the number of its
 * connection), and drops the connection when `lose(frame)` says so of an incoming frame, before
 * the client sees it: a connection lost at exactly that moment.
 * @implements {SocketLike}
 */
class RecordingSocket {
  /**
   * @param {string} url
   * @param {Member} member
   */
  constructor(url, member) {
    this.ws = new WebSocket(url);
    this.member = member;
    this.connection = ++member.connections;
    /** @type {SocketLike["onmessage"]} */
    this.onmessage = null;
    /** @type {SocketLike["onclose"]} */
    this.onclose = null;
    /** @type {SocketLike["onerror"]} */
    this.onerror = null;
    this.ws.on("message", (data) => {
      const text = data.toString();
      if (member.lose && member.lose(JSON.parse(text))) {
        member.lose = null;
        this.ws.terminate();
        return;
      }
      if (this.onmessage) this.onmessage({ data: text });
    });
    this.ws.on("close", (code) => this.onclose && this.onclose({ code }));
    this.ws.on("error", (error) => this.onerror && this.onerror(error));
  }

  get readyState() {
    return this.ws.readyState;
  }

  /** @param {string} text */
  send(text) {
    this.member.sent.push({ connection: this.connection, frame: JSON.parse(text) });
    this.ws.send(text);
  }

  /** @param {number} [code] */
  close(code) {
    this.ws.close(code);
  }
}

/** A user's BiogramSocket and everything it reported. */
class Member {
  /**
   * @param {Login} login
   * @param {{record?: boolean}} [options] record: through RecordingSocket, else the plain `ws`
   */
  constructor(login, { record = true } = {}) {
    this.login = login;
    this.connections = 0;
    /** @type {{connection: number, frame: ClientFrame}[]} */
    this.sent = [];
    /** @type {((frame: ServerFrame) => boolean) | null} */
    this.lose = null;
    /** @type {Message[]} */
    this.messages = [];
    /** @type {[OutboxItem, Message][]} */
    this.acks = [];
    /** @type {TypingData[]} */
    this.typing = [];
    /** @type {ReadData[]} */
    this.reads = [];
    /** @type {DeliveredData[]} */
    this.delivered = [];
    /** @type {{userId: string, online: boolean}[]} */
    this.presence = [];
    /** @type {ErrorData[]} */
    this.errors = [];
    /** @type {ConnectData[]} */
    this.ready = [];

    const member = this;
    this.client = new BiogramSocket({
      url: WS_URL,
      apiBase: `${BASE}/api`,
      getToken: async () => {
        const token = await login.access();
        return { token, expiresAt: expiryOf(token) };
      },
      // The `ws` class as it is, or the recording one: both fit the client's SocketConstructor.
      WebSocketImpl: record
        ? class extends RecordingSocket {
            /** @param {string} url */
            constructor(url) {
              super(url, member);
            }
          }
        : WebSocket,
      backoff: { baseMs: 100, capMs: 1000 },
      deliveredThrottleMs: 50,
    });
    this.client.on("message", (message) => this.messages.push(message));
    this.client.on("sent", (item, message) => this.acks.push([item, message]));
    this.client.on("typing", (data) => this.typing.push(data));
    this.client.on("read", (data) => this.reads.push(data));
    this.client.on("delivered", (data) => this.delivered.push(data));
    this.client.on("presence", (data) => this.presence.push(data));
    this.client.on("error", (data) => this.errors.push(data));
    this.client.on("ready", (data) => this.ready.push(data));
  }

  async connect() {
    const before = this.ready.length;
    this.client.connect();
    await until(() => this.ready.length > before, "the connect frame");
  }

  /** The messages this member was given of the chat, in the order the client emitted them. */
  inChat() {
    return this.messages.filter((m) => m.chatId === CHAT);
  }

  /** @param {string} type */
  sentOf(type) {
    return this.sent.filter(({ frame }) => frame.type === type);
  }
}

/**
 * The chat's whole history from REST, oldest first.
 * @param {Login} login
 * @returns {Promise<Message[]>}
 */
async function history(login) {
  const response = await fetch(`${BASE}/api/chats/${CHAT}/messages/?limit=200`, {
    headers: { Authorization: `Bearer ${await login.access()}` },
  });
  assert.equal(response.status, 200);
  const page = /** @type {HistoryPage} */ (await response.json());
  assert.equal(page.hasMore, false, "one page holds this test's messages");
  return page.results;
}

/** @param {string} what */
async function control(what) {
  const response = await fetch(`${CONTROL}/${what}`, { method: "POST" });
  assert.equal(response.status, 200, `the test's control answered ${what}`);
}

describe("BiogramSocket against a live server", () => {
  const alice = new Member(new Login(env("BIOGRAM_ALICE")));
  const bob = new Member(new Login(env("BIOGRAM_BOB")), { record: false });

  before(async () => {
    // The app holds the chat from its REST history (empty here): seq 0, rev 0.
    alice.client.track(CHAT, "0", "0");
    bob.client.track(CHAT, "0", "0");
    await alice.connect();
    await bob.connect();
  });

  after(() => {
    alice.client.close();
    bob.client.close();
  });

  test("connect: ids are this server's, as strings; others' presence comes as connect frames", async () => {
    const [welcome] = alice.ready;
    assert.equal(welcome.userId, env("BIOGRAM_ALICE_ID"));
    assert.equal(alice.client.userId, env("BIOGRAM_ALICE_ID"));
    assert.ok(welcome.chats.includes(CHAT), "the chat is among the connection's chats");
    assert.equal(typeof welcome.connectionId, "string");
    assert.ok(welcome.tokenExpiresAt && Date.parse(welcome.tokenExpiresAt) > Date.now());

    await until(
      () => alice.presence.some((p) => p.userId === env("BIOGRAM_BOB_ID") && p.online),
      "bob's presence (a `connect` frame without connectionId)",
    );
  });

  test("send: the echo of one's own message is its acknowledgement; the other member gets it once", async () => {
    const item = alice.client.send(CHAT, "hello bob");
    assert.deepEqual(alice.client.pending(CHAT), [item]);

    await until(
      () => alice.acks.some(([i]) => i.clientMessageId === item.clientMessageId),
      "the ack",
    );
    await until(() => bob.inChat().some((m) => m.text === "hello bob"), "bob's copy");
    const [, stored] = /** @type {[OutboxItem, Message]} */ (
      alice.acks.find(([i]) => i.clientMessageId === item.clientMessageId)
    );
    assert.equal(stored.clientMessageId, item.clientMessageId);
    assert.equal(stored.senderId, env("BIOGRAM_ALICE_ID"));
    assert.equal(typeof stored.id, "string");
    assert.equal(stored.seq, "1");
    assert.deepEqual(alice.client.pending(CHAT), []);
    assert.equal(alice.inChat().filter((m) => m.id === stored.id).length, 1, "shown once to alice");
    assert.equal(bob.inChat().filter((m) => m.id === stored.id).length, 1, "shown once to bob");
  });

  test("retry: a message whose ack was lost is resent with the same clientMessageId and stored once", async () => {
    // The connection drops just as the server's echo arrives: stored, but never acknowledged.
    alice.lose = (frame) => frame.type === "message" && frame.data.text === "sent once";
    const connectionsBefore = alice.connections;
    const item = alice.client.send(CHAT, "sent once");

    await until(
      () => alice.acks.some(([i]) => i.clientMessageId === item.clientMessageId),
      "the ack",
      15000,
    );
    const sends = alice
      .sentOf("message")
      .filter(
        ({ frame }) =>
          frame.type === "message" && frame.data.clientMessageId === item.clientMessageId,
      );
    assert.equal(sends.length, 2, "sent, then resent once on the next connection");
    assert.ok(sends[1].connection > connectionsBefore, "the resend went on a new connection");
    assert.equal(alice.lose, null, "the echo was lost");

    await until(
      () => bob.inChat().some((m) => m.clientMessageId === item.clientMessageId),
      "bob's copy",
    );
    await pause(300);
    const stored = (await history(alice.login)).filter(
      (m) => m.clientMessageId === item.clientMessageId,
    );
    assert.equal(stored.length, 1, "stored once");
    assert.equal(
      alice.inChat().filter((m) => m.id === stored[0].id).length,
      1,
      "shown once to alice",
    );
    assert.equal(bob.inChat().filter((m) => m.id === stored[0].id).length, 1, "shown once to bob");
  });

  test("typing: a start, a stop as isTyping false, and the server's own stop when the typist sends", async () => {
    const aliceId = env("BIOGRAM_ALICE_ID");
    const seen = bob.typing.length;
    const typingOfAlice = () => bob.typing.slice(seen).filter((t) => t.userId === aliceId);

    alice.client.typing(CHAT);
    await until(() => typingOfAlice().length === 1, "typing");
    alice.client.stopTyping(CHAT);
    await until(() => typingOfAlice().length === 2, "typing stopped");
    alice.client.typing(CHAT);
    await until(() => typingOfAlice().length === 3, "typing again");
    alice.client.send(CHAT, "done typing");
    await until(() => typingOfAlice().length === 4, "the server's stop");

    assert.deepEqual(
      typingOfAlice().map((t) => [t.chatId, t.isTyping]),
      [
        [CHAT, true],
        [CHAT, false],
        [CHAT, true],
        [CHAT, false],
      ],
    );
    assert.equal(
      alice.typing.filter((t) => t.userId === aliceId).length,
      0,
      "not echoed to the typist",
    );
  });

  test("delivered and read: the other member's positions reach the sender", async () => {
    await until(() => bob.inChat().some((m) => m.text === "done typing"), "bob's copy");
    const last = /** @type {Message} */ (bob.inChat().at(-1));
    const bobId = env("BIOGRAM_BOB_ID");

    bob.client.delivered(CHAT, last.seq);
    await until(
      () => alice.delivered.some((d) => d.userId === bobId && d.seq === last.seq),
      "delivered",
    );
    bob.client.read(CHAT);
    await until(() => alice.reads.some((r) => r.userId === bobId && r.seq === last.seq), "read");
    const read = /** @type {ReadData} */ (alice.reads.find((r) => r.userId === bobId));
    assert.equal(read.messageId, last.id);
  });

  test("token refresh: a fresh token goes in `auth` before the old one expires; the socket stays open", async () => {
    const [welcome] = alice.ready;
    const lifetimeMs = Date.parse(welcome.tokenExpiresAt || "") - Date.parse(welcome.serverTime);
    assert.ok(lifetimeMs > 0 && lifetimeMs <= 10000, `short-lived tokens (${lifetimeMs} ms)`);
    const connectionId = alice.client.connectionId;
    const connections = alice.connections;
    const authsBefore = alice.sentOf("auth").length;

    await pause(lifetimeMs + 2000); // past the whole lifetime of the token held now

    assert.ok(alice.sentOf("auth").length > authsBefore, "an `auth` frame was sent");
    assert.equal(alice.connections, connections, "no new connection");
    assert.equal(
      alice.client.connectionId,
      connectionId,
      "the same connection, never closed with 4001",
    );
    assert.equal(alice.client.state, "connected");
    alice.client.send(CHAT, "still here");
    await until(
      () => bob.inChat().some((m) => m.text === "still here"),
      "a message after the old token's expiry",
    );
  });

  test("restart: after SIGKILL, sync brings what was stored meanwhile, the outbox what was written; each once, in order", async () => {
    await until(() => alice.inChat().some((m) => m.text === "still here"), "alice's echo");
    const seqBefore = Number(/** @type {Message} */ (alice.inChat().at(-1)).seq);
    const revBefore = alice.client.revOf(CHAT);
    const connections = alice.connections;

    await control("kill?messages=3"); // the server is gone; bob's process-mate stores 3 messages
    await until(
      () => alice.client.state !== "connected" && bob.client.state !== "connected",
      "both to notice",
    );
    const queued = [
      bob.client.send(CHAT, "written offline 1"),
      bob.client.send(CHAT, "written offline 2"),
    ];
    assert.equal(bob.client.pending(CHAT).length, 2, "kept in bob's outbox");
    await pause(500); // a few failed reconnect attempts
    await control("start");

    const texts = () => alice.inChat().map((m) => m.text);
    await until(() => texts().includes("written offline 2"), "bob's offline messages", 30000);
    await until(
      () => texts().includes("while you were away 3"),
      "the messages stored meanwhile",
      30000,
    );
    assert.deepEqual(bob.client.pending(CHAT), [], "bob's outbox is empty");
    assert.ok(
      queued.every((item) => bob.acks.some(([i]) => i.clientMessageId === item.clientMessageId)),
    );

    const syncs = alice.sentOf("sync").filter(({ connection }) => connection > connections);
    assert.ok(syncs.length >= 1, "alice sent `sync` on her new connection");
    const first = syncs[0].frame;
    assert.ok(first.type === "sync");
    assert.deepEqual(first.data.chats[CHAT], { seq: String(seqBefore), rev: String(revBefore) });
    const replayed = alice
      .inChat()
      .filter((m) => Number(m.seq) > seqBefore)
      .map((m) => m.text);
    assert.deepEqual(
      replayed.filter((t) => t && t.startsWith("while you were away")),
      ["while you were away 1", "while you were away 2", "while you were away 3"],
    );
  });

  test("nothing lost, nothing twice: each member was given exactly the stored history, in seq order", async () => {
    bob.client.send(CHAT, "the last one");
    await until(() => alice.inChat().some((m) => m.text === "the last one"), "the last message");
    await until(() => bob.inChat().some((m) => m.text === "the last one"), "its echo");
    const stored = await history(bob.login);

    for (const member of [alice, bob]) {
      const given = member.inChat();
      assert.deepEqual(
        given.map((m) => m.seq),
        stored.map((m) => m.seq),
        "every seq from 1, once each, in order",
      );
      assert.deepEqual(
        given.map((m) => m.id),
        stored.map((m) => m.id),
      );
    }
    assert.deepEqual(
      stored.map((m) => Number(m.seq)),
      stored.map((_, i) => i + 1),
    );
    assert.deepEqual(alice.errors, []);
    assert.deepEqual(bob.errors, []);
  });
});

#!/usr/bin/env node
// Churn and soak runs of `make bench` (bench/README.md). Not part of the product.
//
//   node churn.js --data LOAD.json --urls ws://…,ws://… --rate 2000 --duration 300 \
//       [--churn 0.1] [--slow 0.05] [--never 0.02] [--progress 10]
//
// Every user of LOAD.json (written by `manage.py benchdata`; its chats are new
// and empty) connects; together they send --rate messages/s for --duration
// seconds, round-robin over the senders. Every second a --churn fraction of the
// clients drop their socket and come back 50–300 ms later with `sync` (what
// they hold with nothing missing below it, and their rev), and send again,
// under the same clientMessageId, whatever they sent and never saw echoed.
// --slow clients read in bursts (their socket paused 800 ms of every second);
// a slow client the server lets go comes back like a churning one; a refused or
// failed handshake is tried again 250–1,000 ms later, as a real client would. --never
// clients stop reading after their `connect` frame and never send: the server
// must let them go without growing (bench/run.py samples its memory meanwhile).
//
// In the end every reading client must hold every message of its chat exactly
// once (repeats are dropped by id, as docs/protocol.md says), with no hole,
// live frames in seq order, every message sent stored once (a chat's last seq
// is the number of distinct messages sent in it) and no `error` frame.
// Prints a progress line every --progress seconds and one JSON object at the end.
'use strict';

const fs = require('fs');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

function parseArgs(argv) {
  const opts = {
    data: null, urls: 'ws://127.0.0.1:8000', rate: 2000, duration: 300, churn: 0.1,
    slow: 0, never: 0, progress: 10, catchUp: 120, seed: 1683,
  };
  for (let i = 2; i < argv.length; i++) {
    const value = argv[++i];
    switch (argv[i - 1]) {
      case '--data': opts.data = value; break;
      case '--urls': opts.urls = value; break;
      case '--rate': opts.rate = Number(value); break;
      case '--duration': opts.duration = Number(value); break;
      case '--churn': opts.churn = Number(value); break;
      case '--slow': opts.slow = Number(value); break;
      case '--never': opts.never = Number(value); break;
      case '--progress': opts.progress = Number(value); break;
      case '--catch-up': opts.catchUp = Number(value); break;
      case '--seed': opts.seed = Number(value); break;
      default: throw new Error(`unknown option ${argv[i - 1]}`);
    }
  }
  if (!opts.data) throw new Error('--data is required');
  return opts;
}

// A small deterministic PRNG (mulberry32): the same run picks the same clients.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const opts = parseArgs(process.argv);
const users = JSON.parse(fs.readFileSync(opts.data, 'utf8')).users;
const urls = opts.urls.split(',').map((u) => u.replace(/\/+$/, ''));
const random = prng(opts.seed);
const problems = {};
const refusals = {}; // error codes of refused handshakes (each tried again)
const problem = (key) => { problems[key] = (problems[key] || 0) + 1; };
const started = performance.now();
const elapsed = () => (performance.now() - started) / 1000;

// Per chat: message id -> seq (a message must never come with two seqs), and what was sent in it.
const chats = new Map();
const chatOf = (chatId) => {
  if (!chats.has(chatId)) chats.set(chatId, { seqOf: new Map(), sent: new Set() });
  return chats.get(chatId);
};

class Client {
  constructor(user, index, kind) {
    this.user = user;
    this.chat = chatOf(user.chatId);
    this.url = `${urls[index % urls.length]}/ws/chat/?token=${encodeURIComponent(user.token)}`;
    this.kind = kind; // 'normal' | 'slow' | 'never'
    this.have = new Uint8Array(1024); // have[seq] = 1 once held
    this.count = 0; // distinct messages held
    this.contiguous = 0; // held with nothing missing up to here
    this.rev = 0;
    this.unacked = new Map(); // clientMessageId -> text
    this.ws = null;
    this.open = false;
    this.connections = 0;
    this.dropsByServer = 0;
    this.retries = 0; // handshakes refused or failed, tried again
    this.pauseTimer = null;
  }

  hold(seq) {
    if (seq >= this.have.length) {
      const grown = new Uint8Array(Math.max(seq + 1, this.have.length * 2));
      grown.set(this.have);
      this.have = grown;
    }
    this.have[seq] = 1;
    this.count += 1;
    while (this.contiguous + 1 < this.have.length && this.have[this.contiguous + 1]) this.contiguous += 1;
  }

  connect() {
    return new Promise((resolve) => {
      const ws = new WebSocket(this.url, { perMessageDeflate: false });
      this.ws = ws;
      let greeted = false;
      let replaying = false;
      let lastLive = 0;
      ws.on('message', (buf) => {
        const frame = JSON.parse(buf.toString('utf8'));
        const data = frame.data || {};
        if (frame.type === 'connect' && !greeted) {
          greeted = true;
          this.open = true;
          this.connections += 1;
          if (this.kind === 'never') {
            ws._socket.pause(); // reads nothing more, ever
          } else {
            if (this.connections > 1) this.sync(ws);
            replaying = this.connections > 1;
            for (const [clientId, text] of this.unacked) this.transmit(clientId, text);
            if (this.kind === 'slow') this.readInBursts(ws);
          }
          resolve();
        } else if (frame.type === 'message') {
          const m = data.message;
          const seq = Number(m.seq);
          const known = this.chat.seqOf.get(m.id);
          if (known === undefined) this.chat.seqOf.set(m.id, seq);
          else if (known !== seq) problem('a message with two seqs');
          if (seq < this.have.length && this.have[seq]) {
            // a repeat (replayed and live, or the answer to a retried send): dropped by id
          } else {
            if (!replaying) {
              if (seq <= lastLive) problem('live frames out of seq order');
              lastLive = seq;
            }
            this.hold(seq);
          }
          this.rev = Math.max(this.rev, Number(m.rev || 0));
          if (m.senderId === this.user.userId) this.unacked.delete(m.clientMessageId);
        } else if (frame.type === 'sync') {
          replaying = false;
          const summary = data.chats[this.user.chatId];
          if (summary && summary.hasMore) { replaying = true; this.sync(ws); }
        } else if (frame.type === 'error') {
          // Before `connect`: the handshake is refused (over the per-user cap while the server
          // has not yet seen this client's last socket go): the client tries again below.
          if (greeted) problem(`error ${data.code}`);
          else refusals[data.code] = (refusals[data.code] || 0) + 1;
        }
      });
      ws.on('error', () => {});
      ws.on('close', () => {
        clearInterval(this.pauseTimer);
        const wasOpen = this.open && this.ws === ws;
        if (this.ws === ws) this.open = false;
        if (!greeted) {
          // Refused or failed: a real client backs off and tries again, and so does this one.
          this.retries += 1;
          if (running) setTimeout(() => this.connect().then(resolve), 250 + random() * 750);
          else { problem('handshake failed'); resolve(); }
          return;
        }
        if (wasOpen && !this.leaving && running) {
          // Not our doing: the server let a slow client go. It comes back like a churning one.
          this.dropsByServer += 1;
          setTimeout(() => this.connect(), 200);
        }
      });
    });
  }

  sync(ws) {
    const held = { seq: String(this.contiguous), rev: String(this.rev) };
    ws.send(JSON.stringify({ type: 'sync', data: { chats: { [this.user.chatId]: held } } }));
  }

  readInBursts(ws) {
    let tick = 0;
    this.pauseTimer = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      tick = (tick + 1) % 10;
      if (tick === 0) ws._socket.resume(); // 200 ms of reading in every second
      else if (tick === 2) ws._socket.pause();
    }, 100);
  }

  transmit(clientId, text) {
    if (!this.open) return; // sent again after the reconnect
    const frame = { chatId: this.user.chatId, text, clientMessageId: clientId };
    this.ws.send(JSON.stringify({ type: 'message', data: frame }));
  }

  send(clientId, text) {
    this.unacked.set(clientId, text);
    this.chat.sent.add(clientId);
    this.transmit(clientId, text);
  }

  async drop() {
    if (!this.open) return;
    this.leaving = true;
    const ws = this.ws;
    this.open = false;
    await new Promise((resolve) => { ws.once('close', resolve); ws.close(); });
    this.leaving = false;
  }
}

let running = true;

async function main() {
  const nNever = Math.round(users.length * opts.never);
  const nSlow = Math.round(users.length * opts.slow);
  // Spread the kinds evenly over the users (and so over the chats).
  const kinds = users.map(() => 'normal');
  const special = nNever + nSlow;
  for (let k = 0; k < special; k++) kinds[Math.floor((k * users.length) / special)] = k < nNever ? 'never' : 'slow';
  const clients = users.map((u, i) => new Client(u, i, kinds[i]));
  const senders = clients.filter((c) => c.kind !== 'never');
  const readers = senders;
  for (let i = 0; i < clients.length; i += 200) {
    await Promise.all(clients.slice(i, i + 200).map((c) => c.connect()));
  }
  const connectedMs = elapsed() * 1000;
  emit({ event: 'connected', clients: clients.length, slow: nSlow, never: nNever, ms: Math.round(connectedMs) });

  let sent = 0;
  let churned = 0;
  const sendStart = performance.now();
  let lastProgress = 0;
  await new Promise((resolve) => {
    let lastChurn = 0;
    const timer = setInterval(() => {
      const t = (performance.now() - sendStart) / 1000;
      if (t >= opts.duration) { clearInterval(timer); resolve(); return; }
      const due = Math.floor(t * opts.rate);
      while (sent < due) {
        const client = senders[sent % senders.length];
        client.send(`${client.user.userId}-${sent}`, `churn #${sent} ${'x'.repeat(80)}`);
        sent += 1;
      }
      if (opts.churn > 0 && Math.floor(t) > lastChurn) {
        lastChurn = Math.floor(t);
        const n = Math.round(clients.length * opts.churn);
        for (let k = 0; k < n; k++) {
          const client = clients[Math.floor(random() * clients.length)];
          if (client.kind === 'never' || !client.open) continue;
          churned += 1;
          client.drop().then(() => setTimeout(() => client.connect(), 50 + random() * 250));
        }
      }
      if (opts.progress && t - lastProgress >= opts.progress) {
        lastProgress = t;
        emit({ event: 'progress', t: Math.round(t), sent, open: clients.filter((c) => c.open).length });
      }
    }, 10);
  });
  const sendSeconds = (performance.now() - sendStart) / 1000;

  // Catch up: everyone holds every message of its chat (a chat's messages: what was sent in it).
  const deadline = performance.now() + opts.catchUp * 1000;
  const behind = () => readers.filter((c) => c.unacked.size
    || !(c.open && c.contiguous === c.count && c.count === c.chat.sent.size));
  while (behind().length && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
  }
  const caughtUpMs = Math.round(elapsed() * 1000 - sendSeconds * 1000 - connectedMs);
  running = false;
  const late = behind();
  // Each client behind counts under every reason that applies: under overload "never
  // acknowledged" says the server was late, "a hole" would say it lost something.
  for (const c of late) {
    if (c.unacked.size) problem('never acknowledged');
    if (c.count !== c.chat.sent.size) problem('misses messages');
    if (c.contiguous !== c.count) problem('a hole');
    if (!c.open) problem('not reconnected');
  }
  let maxSeqOverSent = 0;
  for (const chat of chats.values()) {
    let maxSeq = 0;
    for (const seq of chat.seqOf.values()) maxSeq = Math.max(maxSeq, seq);
    if (maxSeq !== chat.sent.size) maxSeqOverSent += 1;
  }
  if (maxSeqOverSent) problems['chats whose last seq is not the number of messages sent'] = maxSeqOverSent;
  await Promise.all(clients.map((c) => c.drop()));
  const stored = [...chats.values()].reduce((n, chat) => n + chat.seqOf.size, 0);
  emit({
    event: 'done',
    clients: clients.length,
    readers: readers.length,
    slow: nSlow,
    never: nNever,
    rate: opts.rate,
    durationS: opts.duration,
    sent,
    sentPerSec: Math.round(sent / sendSeconds),
    stored,
    churnedConnections: churned,
    reconnects: clients.reduce((n, c) => n + Math.max(0, c.connections - 1), 0),
    droppedByServer: clients.reduce((n, c) => n + c.dropsByServer, 0),
    handshakesRetried: clients.reduce((n, c) => n + c.retries, 0),
    refusals,
    caughtUpAfterMs: late.length ? null : caughtUpMs,
    readersComplete: readers.length - late.length,
    problems,
    problemCount: Object.values(problems).reduce((a, b) => a + b, 0),
  });
}

function emit(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

main().then(() => process.exit(0)).catch((err) => { console.error(err); process.exit(1); });

#!/usr/bin/env node
// Load generator for `make bench` (see bench/README.md). Not part of the product.
//
// One Node process holds every client connection, so a delivery's latency is
// simply "receive time minus send time" looked up in one shared table by the
// message's clientMessageId. It shares a 2-core machine with the server under
// test, so the receive path avoids JSON.parse for `message` frames (a byte
// search on the raw Buffer finds the clientMessageId) and keeps its
// bookkeeping in preallocated typed arrays.
//
// Modes:
//   node loadgen.js --data FILE --urls ws://127.0.0.1:8000 --rate 500,1000 --duration 5
//       connect everybody, run one step per rate, print one JSON line per event, exit.
//   node loadgen.js --data FILE --urls ... --interactive
//       connect everybody, print {"event":"connected",...}, then obey JSON lines
//       on stdin: {"cmd":"step","rate":R,"duration":D}, {"cmd":"finish"} (wait
//       for the last step's late deliveries) and {"cmd":"quit"}. This is how
//       bench/run.py drives it (it reads the server's RSS and CPU between lines).
//       {"cmd":"targets"} has every client send one message and learn its id;
//       then {"cmd":"step",...,"kind":"log"} measures the chat log instead of
//       new messages: each sender alternately edits its message and toggles a
//       reaction on it, and every member's `update` frame is a delivery.
// Each step's late deliveries (after its drain period) are reported in the
// next event's "previous" field.
'use strict';

const fs = require('fs');
const readline = require('readline');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

// ------------------------------------------------------------------ options

function parseArgs(argv) {
  const opts = {
    data: null,
    urls: 'ws://127.0.0.1:8000',
    path: '/ws/chat/',
    concurrency: 200,
    drain: 3,
    textBytes: 100,
    limit: 0,
    handshakeTimeout: 30,
    settleMax: 30,
    quiet: 5,
    rate: null,
    duration: 10,
    interactive: false,
    deflate: false,
  };
  for (let i = 2; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) fail(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--data': opts.data = next(); break;
      case '--urls': opts.urls = next(); break;
      case '--path': opts.path = next(); break;
      case '--concurrency': opts.concurrency = posInt(arg, next()); break;
      case '--drain': opts.drain = posNum(arg, next()); break;
      case '--text-bytes': opts.textBytes = posInt(arg, next()); break;
      case '--limit': opts.limit = posInt(arg, next()); break;
      case '--handshake-timeout': opts.handshakeTimeout = posNum(arg, next()); break;
      case '--settle-max': opts.settleMax = posNum(arg, next()); break;
      case '--quiet': opts.quiet = posNum(arg, next()); break;
      case '--rate': opts.rate = next().split(',').map((r) => posNum('--rate', r)); break;
      case '--duration': opts.duration = posNum(arg, next()); break;
      case '--interactive': opts.interactive = true; break;
      // Off by default: compression costs CPU on both ends and the servers
      // compared here run the same uvicorn, so it would only add noise.
      case '--deflate': opts.deflate = true; break;
      case '-h': case '--help':
        process.stdout.write(fs.readFileSync(__filename, 'utf8').split('\n').slice(0, 22).join('\n') + '\n');
        process.exit(0);
        break;
      default: fail(`unknown option ${arg}`);
    }
  }
  if (!opts.data) fail('--data FILE is required');
  if (!opts.interactive && !opts.rate) fail('give --rate R[,R...] or --interactive');
  return opts;
}

function posNum(name, value) {
  const n = Number(value);
  if (!(n > 0)) fail(`${name}: not a positive number: ${value}`);
  return n;
}

function posInt(name, value) {
  const n = posNum(name, value);
  if (!Number.isInteger(n)) fail(`${name}: not an integer: ${value}`);
  return n;
}

function fail(message) {
  process.stderr.write(`loadgen: ${message}\n`);
  process.exit(2);
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function bump(counter, key) {
  counter[key] = (counter[key] || 0) + 1;
}

function round(x, digits = 2) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// ------------------------------------------------------------------ users and chats

const opts = parseArgs(process.argv);
const data = JSON.parse(fs.readFileSync(opts.data, 'utf8'));
let users = data.users;
if (!Array.isArray(users) || users.length === 0) fail(`${opts.data}: no users`);
if (opts.limit) users = users.slice(0, opts.limit);
const N = users.length;
const urls = opts.urls.split(',').map((u) => u.replace(/\/+$/, ''));

// Dense chat indexes and each user's index among its chat's members, so that
// "has member m received message n" is one byte in a flat array.
const chatIndexOf = new Map();
const chatMemberCount = [];
const userChat = new Int32Array(N);
const userMember = new Int32Array(N);
for (let i = 0; i < N; i++) {
  const chatId = String(users[i].chatId);
  let c = chatIndexOf.get(chatId);
  if (c === undefined) {
    c = chatMemberCount.length;
    chatIndexOf.set(chatId, c);
    chatMemberCount.push(0);
  }
  userChat[i] = c;
  userMember[i] = chatMemberCount[c]++;
}
const maxMembers = Math.max(...chatMemberCount);

function wsUrl(i) {
  const u = users[i];
  // Clients are spread round-robin over the URLs, so with two server
  // processes every chat has members on both. `chatId` is for the reference
  // server (no auth, no database); ours ignores unknown parameters.
  return `${urls[i % urls.length]}${opts.path}?token=${encodeURIComponent(u.token)}` +
    `&chatId=${encodeURIComponent(u.chatId)}`;
}

// ------------------------------------------------------------------ per-step bookkeeping

// clientMessageId = "<run>.<step>.<n>": unique per sender for the server's
// lifetime (the server treats a reused id as a retry), and it tells a late
// delivery of an earlier step from one of the current step.
const runTag = Math.random().toString(36).slice(2, 8);
let step = null; // the step being measured, or null between steps
let prev = null; // the step before: its late deliveries are still counted
let stepNo = 0;
let lastFrameAt = performance.now();

// Counters that outlive steps (connection phase, frames between steps);
// `older`: deliveries of a step older than `prev`.
const global = { closes: {}, errors: {}, wsErrors: {}, otherFrames: {}, older: 0 };

// The chat log's steps change one message per sender (its "target", sent by
// the `targets` command). A chat's `update` frames arrive in `rev` order, so the
// c-th update a member sees of a target answers the c-th change sent to it:
// changeLog[sender] holds (step, message number) of each change in send order.
const targetPrefix = `${runTag}.t.`;
const targetId = new Array(N).fill(null); // user i's target message id
const targetOwner = new Map(); // message id -> the user whose target it is
const changeLog = Array.from({ length: N }, () => []);
const changesSeen = new Int32Array(N * maxMembers); // [receiver * maxMembers + owner's member index]
const reactionOn = new Uint8Array(N);

function newStep(rate, duration) {
  const capacity = Math.ceil(rate * duration) + 1;
  const cells = capacity * maxMembers;
  if (cells > 400e6) fail(`step too large: ${capacity} messages x ${maxMembers} members`);
  stepNo += 1;
  return {
    no: stepNo,
    prefix: `${runTag}.${stepNo}.`,
    rate,
    duration,
    total: Math.round(rate * duration),
    sendTime: new Float64Array(capacity),
    msgChat: new Int32Array(capacity),
    got: new Uint8Array(cells), // got[n * maxMembers + member]
    latencies: new Float64Array(cells),
    sent: 0,
    expected: 0,
    delivered: 0,
    duplicates: 0,
    late: 0, // arrived after the drain period (counted as lost in the step's own figures)
    lateDuplicates: 0,
    lateMaxMs: 0,
    maxGapMs: 0, // longest time without any frame from the server during the step
    skippedClosed: 0,
    maxSendLagMs: 0,
    firstSendAt: 0,
    lastDeliveryAt: 0,
    closes: {},
    errors: {},
    wsErrors: {},
    otherFrames: {},
  };
}

// ------------------------------------------------------------------ receiving

const CMID_KEY = Buffer.from('"clientMessageId"');
const MESSAGE_TYPE = /^\{\s*"type"\s*:\s*"message"/;
const QUOTE = 0x22;

function onFrame(i, buf) {
  const now = performance.now();
  if (step !== null && now - lastFrameAt > step.maxGapMs) step.maxGapMs = now - lastFrameAt;
  lastFrameAt = now;
  if (!Buffer.isBuffer(buf)) buf = Buffer.concat(buf);
  // Fast path: a message frame whose "type" comes first (both servers write
  // it so). Anything else goes through JSON.parse, which is rare.
  const k = buf.indexOf(CMID_KEY);
  if (k >= 0 && MESSAGE_TYPE.test(buf.latin1Slice(0, Math.min(buf.length, 32)))) {
    let p = k + CMID_KEY.length;
    while (p < buf.length && buf[p] !== QUOTE) p++; // skip ': '
    const end = buf.indexOf(QUOTE, p + 1);
    if (end > p) {
      const id = buf.latin1Slice(p + 1, end);
      if (id.startsWith(targetPrefix)) onTarget(id, buf);
      else onDelivery(i, id, now);
      return;
    }
  }
  let frame;
  try {
    frame = JSON.parse(buf.toString('utf8'));
  } catch (e) {
    bump(step ? step.otherFrames : global.otherFrames, 'unparsable');
    return;
  }
  const type = frame && frame.type;
  const d = (frame && frame.data) || {};
  if (type === 'message') {
    const id = d.message && d.message.clientMessageId;
    if (typeof id === 'string') onDelivery(i, id, now);
    else bump(step ? step.otherFrames : global.otherFrames, 'message-without-id');
  } else if (type === 'update') {
    onUpdate(i, d.message && d.message.id, now);
  } else if (type === 'error') {
    bump(step ? step.errors : global.errors, String(d.code));
  } else if (type === 'connect' && clients[i].pending) {
    clients[i].pending(true);
  } else {
    bump(step ? step.otherFrames : global.otherFrames, String(type));
  }
}

// A delivery belongs to the step being measured, or is a late one of the step
// before it: that one already counted it as lost, and counts it again as
// `late`, so that a slow server can be told from one that drops deliveries.
function onDelivery(i, id, now) {
  if (step !== null && id.startsWith(step.prefix)) record(step, i, +id.slice(step.prefix.length), now, false);
  else if (prev !== null && id.startsWith(prev.prefix)) record(prev, i, +id.slice(prev.prefix.length), now, true);
  else global.older++;
}

function onTarget(id, buf) {
  const owner = +id.slice(targetPrefix.length);
  if (targetId[owner] !== null) return; // already known from another member's copy
  const message = JSON.parse(buf.toString('utf8')).data.message;
  targetId[owner] = String(message.id);
  targetOwner.set(String(message.id), owner);
}

function onUpdate(i, messageId, now) {
  const owner = targetOwner.get(String(messageId));
  const entry = owner === undefined ? undefined : changeLog[owner][changesSeen[i * maxMembers + userMember[owner]]++];
  if (entry === undefined) {
    bump(step ? step.otherFrames : global.otherFrames, 'unexpected-update');
    return;
  }
  const [s, n] = entry;
  if (s === step) record(s, i, n, now, false);
  else if (s === prev) record(s, i, n, now, true);
  else global.older++;
}

function record(s, i, n, now, late) {
  if (!(n >= 0 && n < s.sent) || s.msgChat[n] !== userChat[i]) {
    bump(s.otherFrames, 'unexpected-message');
    return;
  }
  const cell = n * maxMembers + userMember[i];
  if (s.got[cell]) {
    if (late) s.lateDuplicates++;
    else s.duplicates++;
    return;
  }
  s.got[cell] = 1;
  const latency = now - s.sendTime[n];
  if (late) {
    s.late++;
    if (latency > s.lateMaxMs) s.lateMaxMs = latency;
    return;
  }
  s.latencies[s.delivered++] = latency;
  s.lastDeliveryAt = now;
}

// ------------------------------------------------------------------ connecting

const clients = new Array(N);
for (let i = 0; i < N; i++) clients[i] = { ws: null, open: false, pending: null };

function connectOne(i) {
  return new Promise((resolve) => {
    const c = clients[i];
    const started = performance.now();
    let settled = false;
    const finish = (ok) => {
      if (settled) return;
      settled = true;
      c.pending = null;
      clearTimeout(timer);
      c.open = ok;
      if (!ok && ws.readyState !== WebSocket.CLOSED) ws.terminate();
      resolve(ok ? performance.now() - started : -1);
    };
    const ws = new WebSocket(wsUrl(i), {
      perMessageDeflate: opts.deflate,
      handshakeTimeout: opts.handshakeTimeout * 1000,
    });
    c.ws = ws;
    c.pending = finish; // resolved by the server's `connect` frame
    const timer = setTimeout(() => {
      bump(global.wsErrors, 'connect-timeout');
      finish(false);
    }, opts.handshakeTimeout * 1000);
    ws.on('message', (buf) => onFrame(i, buf));
    ws.on('error', (err) => {
      bump(step ? step.wsErrors : global.wsErrors, err.code || err.message);
      finish(false);
    });
    ws.on('close', (code) => {
      if (c.ws === ws) c.open = false;
      bump(step ? step.closes : global.closes, String(code));
      finish(false);
    });
  });
}

function percentile(sorted, count, q) {
  if (count === 0) return null;
  const idx = Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1));
  return sorted[idx];
}

// Opens the given clients with at most `concurrency` handshakes in flight.
async function connectMany(indices) {
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  const times = new Float64Array(indices.length);
  let ok = 0;
  let failed = 0;
  let next = 0;
  async function worker() {
    while (next < indices.length) {
      const i = indices[next++];
      const t = await connectOne(i);
      if (t >= 0) times[ok++] = t;
      else failed++;
    }
  }
  const workers = [];
  for (let w = 0; w < Math.min(opts.concurrency, indices.length); w++) workers.push(worker());
  await Promise.all(workers);
  const wall = performance.now() - started;
  const sorted = times.subarray(0, ok).sort();
  return {
    attempted: indices.length,
    connected: ok,
    failed,
    connectMs: round(wall, 1),
    handshakeP50Ms: round(percentile(sorted, ok, 0.5) ?? 0),
    handshakeP99Ms: round(percentile(sorted, ok, 0.99) ?? 0),
    generatorCpuPct: cpuPct(cpu0, wall),
  };
}

function cpuPct(cpu0, wallMs) {
  const d = process.cpuUsage(cpu0);
  return round(((d.user + d.system) / 1000 / wallMs) * 100, 1);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ one load step

function sendOne(s) {
  // Senders go round-robin over all users; a closed one is skipped (its
  // chat's deliveries would only be lost for reasons already counted).
  for (let tries = 0; tries < N; tries++) {
    const i = s.cursor;
    s.cursor = (s.cursor + 1) % N;
    const c = clients[i];
    if (!c.open || (s.kind === 'log' && targetId[i] === null)) {
      s.skippedClosed++;
      continue;
    }
    const n = s.sent++;
    const chat = userChat[i];
    s.msgChat[n] = chat;
    s.expected += chatMemberCount[chat];
    const id = s.prefix + n;
    s.sendTime[n] = performance.now();
    c.ws.send(s.kind === 'log' ? logChange(s, i, n) : messageFrame(i, s.text, id));
    return true;
  }
  return false;
}

// A `message` frame of user i (text and id need no escaping).
function messageFrame(i, text, clientMessageId) {
  return `{"type":"message","data":{"chatId":"${users[i].chatId}",` +
    `"text":"${text}","clientMessageId":"${clientMessageId}"}}`;
}

// The sender's next change to its target: an edit (new text each time), then a
// reaction 👍 added, an edit, the reaction removed, and so on. Each one changes
// the message, so each one is an `update` to every member.
function logChange(s, i, n) {
  const changes = changeLog[i];
  changes.push([s, n]);
  const where = `"chatId":"${users[i].chatId}","messageId":"${targetId[i]}"`;
  if (changes.length % 2 === 1) {
    return `{"type":"edit","data":{${where},"text":"${s.prefix}${n} ${s.text}"}}`;
  }
  reactionOn[i] ^= 1;
  return `{"type":"react","data":{${where},"emoji":"\ud83d\udc4d","on":${reactionOn[i] ? 'true' : 'false'}}}`;
}

// Every open client sends one message, its target for the chat log's steps;
// done when every open client knows its target's id (from its own copy).
async function sendTargets(timeoutS = 60) {
  const started = performance.now();
  for (let i = 0; i < N; i++) {
    if (clients[i].open && targetId[i] === null) {
      clients[i].ws.send(messageFrame(i, 'target', `${targetPrefix}${i}`));
    }
  }
  const missing = () => clients.filter((c, i) => c.open && targetId[i] === null).length;
  while (missing() > 0 && performance.now() - started < timeoutS * 1000) await sleep(20);
  return {
    event: 'targets',
    ready: targetId.filter((t) => t !== null).length,
    missing: missing(),
    ms: round(performance.now() - started, 0),
  };
}

// After a clean step a short quiet spell is enough; after one that left
// deliveries missing, wait for a longer one (the server may still be working
// through its backlog, or may have dropped those deliveries for good).
// The longer quiet spell is long because a server under overload can pause for
// seconds in the middle of its backlog; it ends early when nothing is missing.
async function settle() {
  const missing = () => (prev ? prev.expected - prev.delivered - prev.late : 0);
  const outstandingAtStart = missing();
  const start = performance.now();
  let settled = false;
  while (performance.now() - start < opts.settleMax * 1000) {
    const quietMs = missing() > 0 ? opts.quiet * 1000 : 300;
    if (performance.now() - lastFrameAt >= quietMs) {
      settled = true;
      break;
    }
    await sleep(50);
  }
  return {
    settleMs: round(performance.now() - start, 0),
    // false: the server was still delivering an earlier backlog when this step began.
    settled,
    outstandingAtStart,
  };
}

// What arrived of the previous step after its drain period.
function previousReport() {
  if (prev === null) return null;
  return {
    step: prev.no,
    late: prev.late,
    lateDuplicates: prev.lateDuplicates,
    lateMaxMs: round(prev.lateMaxMs, 1),
    stillMissing: prev.expected - prev.delivered - prev.late,
  };
}

async function runStep(rate, duration, kind = 'message') {
  // Reopen what an earlier overloaded step lost, then wait until the server
  // has gone quiet so that an earlier backlog does not leak into this step.
  const closed = [];
  for (let i = 0; i < N; i++) if (!clients[i].open) closed.push(i);
  const reconnect = closed.length ? await connectMany(closed) : null;
  const quiet = await settle();

  const s = newStep(rate, duration);
  s.kind = kind;
  s.cursor = (s.no * 7919) % N; // vary who sends first between steps
  // ~textBytes of text, no characters that need escaping.
  const filler = 'lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ';
  s.text = filler.repeat(Math.ceil(opts.textBytes / filler.length) + 1).slice(0, opts.textBytes);
  step = s;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  lastFrameAt = t0;
  s.firstSendAt = t0;
  const durationMs = duration * 1000;

  // Paced by the clock, not by the timer: each tick sends what is due by now,
  // so a late timer shows up as a burst (and as maxSendLagMs), not as a lower rate.
  await new Promise((resolve) => {
    const tick = () => {
      const elapsed = performance.now() - t0;
      const due = Math.min(s.total, Math.floor((elapsed * rate) / 1000));
      if (due > s.sent) {
        const lag = elapsed - (s.sent * 1000) / rate;
        if (lag > s.maxSendLagMs) s.maxSendLagMs = lag;
      }
      while (s.sent < due) if (!sendOne(s)) break;
      if (s.sent >= s.total || elapsed >= durationMs + 1000) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  const sendEnd = performance.now();

  // Drain: wait for the rest, but not longer than needed.
  while (s.delivered < s.expected && performance.now() - sendEnd < opts.drain * 1000) {
    await sleep(20);
  }
  const end = performance.now();
  step = null;

  const lat = s.latencies.subarray(0, s.delivered).sort();
  const lastAt = s.lastDeliveryAt || end;
  const result = {
    event: 'step',
    step: s.no,
    kind,
    targetRate: rate,
    duration,
    sent: s.sent,
    sendRate: round(s.sent / ((sendEnd - t0) / 1000), 1),
    maxSendLagMs: round(s.maxSendLagMs, 1),
    expected: s.expected,
    delivered: s.delivered,
    lost: s.expected - s.delivered,
    duplicates: s.duplicates,
    // Deliveries over the time from the first send to the last delivery.
    deliveredPerSec: round(s.delivered / (Math.max(lastAt - t0, 1) / 1000), 1),
    p50Ms: round(percentile(lat, s.delivered, 0.5) ?? 0),
    p95Ms: round(percentile(lat, s.delivered, 0.95) ?? 0),
    p99Ms: round(percentile(lat, s.delivered, 0.99) ?? 0),
    maxMs: round(s.delivered ? lat[s.delivered - 1] : 0),
    maxFrameGapMs: round(s.maxGapMs, 1),
    errors: s.errors,
    closes: s.closes,
    wsErrors: s.wsErrors,
    otherFrames: s.otherFrames,
    skippedClosed: s.skippedClosed,
    reconnected: reconnect ? reconnect.connected : 0,
    ...quiet,
    drainMs: round(end - sendEnd, 0),
    generatorCpuPct: cpuPct(cpu0, end - t0),
    open: clients.reduce((n, c) => n + (c.open ? 1 : 0), 0),
  };
  // This step's late deliveries are reported by the next step (or `finish`).
  result.previous = previousReport();
  result.older = global.older;
  global.older = 0;
  prev = s;
  return result;
}

// The end of a session: wait for the last step's late deliveries and report them.
async function finish() {
  const quiet = await settle();
  return { event: 'finish', ...quiet, previous: previousReport(), older: global.older };
}

// ------------------------------------------------------------------ main

async function closeAll() {
  const pending = [];
  for (const c of clients) {
    if (c.ws && c.ws.readyState !== WebSocket.CLOSED) {
      pending.push(new Promise((r) => c.ws.once('close', r)));
      c.ws.close(1000);
    }
  }
  await Promise.race([Promise.all(pending), sleep(5000)]);
}

async function main() {
  const all = Array.from({ length: N }, (_, i) => i);
  const conn = await connectMany(all);
  emit({
    event: 'connected',
    users: N,
    chats: chatMemberCount.length,
    urls,
    ...conn,
    closes: global.closes,
    errors: global.errors,
    wsErrors: global.wsErrors,
  });

  if (!opts.interactive) {
    for (const rate of opts.rate) emit(await runStep(rate, opts.duration));
    emit(await finish());
    await closeAll();
    process.exit(0);
  }

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      emit({ event: 'error', message: `bad command: ${line}` });
      continue;
    }
    if (cmd.cmd === 'step') {
      emit(await runStep(Number(cmd.rate), Number(cmd.duration), cmd.kind === 'log' ? 'log' : 'message'));
    } else if (cmd.cmd === 'targets') {
      emit(await sendTargets());
    } else if (cmd.cmd === 'finish') {
      emit(await finish());
    } else if (cmd.cmd === 'status') {
      emit({
        event: 'status',
        open: clients.reduce((n, c) => n + (c.open ? 1 : 0), 0),
        closes: global.closes,
        errors: global.errors,
        otherFrames: global.otherFrames,
      });
    } else if (cmd.cmd === 'quit') {
      break;
    } else {
      emit({ event: 'error', message: `unknown command: ${cmd.cmd}` });
    }
  }
  await closeAll();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`loadgen: ${err.stack || err}\n`);
  process.exit(1);
});

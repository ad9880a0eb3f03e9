#!/usr/bin/env node
// The reconnect storm of `make bench` (bench/README.md). Not part of the product.
//
//   node storm.js --data LOAD.json --missed MISSED.json --urls ws://…,ws://…
//
// Every user of LOAD.json (written by `manage.py benchdata`) was away while
// `manage.py benchmissed` stored messages in their chats (MISSED.json: what
// each chat's members hold, and how many were stored since). All of them
// connect at once (every handshake in flight together), and each sends `sync`
// with what it holds as soon as its `connect` frame arrives. A client has
// caught up when the `sync` summary of its chat arrives; it must have received
// exactly the messages stored since, each once, in seq order. Prints one JSON
// object: how long until everyone had caught up, and what went wrong if
// anything did.
'use strict';

const fs = require('fs');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

function parseArgs(argv) {
  const opts = { data: null, missed: null, urls: 'ws://127.0.0.1:8000', timeout: 60 };
  for (let i = 2; i < argv.length; i++) {
    const value = argv[++i];
    switch (argv[i - 1]) {
      case '--data': opts.data = value; break;
      case '--missed': opts.missed = value; break;
      case '--urls': opts.urls = value; break;
      case '--timeout': opts.timeout = Number(value); break;
      default: throw new Error(`unknown option ${argv[i - 1]}`);
    }
  }
  if (!opts.data || !opts.missed) throw new Error('--data and --missed are required');
  return opts;
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

const round = (x) => (x === null ? null : Math.round(x * 10) / 10);

async function main() {
  const opts = parseArgs(process.argv);
  const users = JSON.parse(fs.readFileSync(opts.data, 'utf8')).users;
  const missed = JSON.parse(fs.readFileSync(opts.missed, 'utf8'));
  const urls = opts.urls.split(',');
  const problems = {};
  const problem = (key) => { problems[key] = (problems[key] || 0) + 1; };
  const connectedAt = [];
  const caughtUpAt = [];
  const started = performance.now();

  await Promise.all(users.map((user, i) => new Promise((resolve) => {
    const held = missed.held[user.chatId];
    const from = Number(held.seq);
    const url = `${urls[i % urls.length]}/ws/chat/?token=${encodeURIComponent(user.token)}`;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    let next = from + 1;
    let done = false;
    let greeted = false; // the first `connect` is ours; later ones announce others coming online
    const finish = (what) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (what) problem(what);
      ws.close();
      resolve();
    };
    const timer = setTimeout(() => finish('timed out'), opts.timeout * 1000);
    ws.on('message', (buf) => {
      const frame = JSON.parse(buf.toString('utf8'));
      const data = frame.data || {};
      if (frame.type === 'connect' && !greeted) {
        greeted = true;
        connectedAt.push(performance.now() - started);
        ws.send(JSON.stringify({ type: 'sync', data: { chats: { [user.chatId]: held } } }));
      } else if (frame.type === 'message') {
        const seq = Number(data.message.seq);
        if (data.chatId !== user.chatId) problem('message of another chat');
        else if (seq < next) problem('duplicate or out of order');
        else if (seq > next) { problem('gap'); next = seq + 1; }
        else next += 1;
      } else if (frame.type === 'sync') {
        const summary = data.chats[user.chatId];
        if (next - 1 - from !== missed.perChat) problem('wrong number of messages replayed');
        if (!summary || summary.hasMore || Number(summary.lastSeq) !== next - 1) {
          problem('summary disagrees with the replay');
        }
        caughtUpAt.push(performance.now() - started);
        finish(null);
      } else if (frame.type === 'error') {
        problem(`error ${data.code}`);
      }
    });
    ws.on('error', (err) => finish(`socket error ${err.code || err.message}`));
    ws.on('close', (code) => finish(done ? null : `closed ${code}`));
  })));

  connectedAt.sort((a, b) => a - b);
  caughtUpAt.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({
    clients: users.length,
    missedPerChat: missed.perChat,
    connected: connectedAt.length,
    caughtUp: caughtUpAt.length,
    allConnectedMs: round(connectedAt[connectedAt.length - 1] ?? null),
    caughtUpP50Ms: round(percentile(caughtUpAt, 0.5)),
    caughtUpP99Ms: round(percentile(caughtUpAt, 0.99)),
    allCaughtUpMs: caughtUpAt.length === users.length ? round(caughtUpAt[caughtUpAt.length - 1]) : null,
    problems,
  }) + '\n');
}

main().catch((err) => { console.error(err); process.exit(1); });

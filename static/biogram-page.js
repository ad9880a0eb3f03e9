/**
 * biogram-page.js: the built-in messages page (templates/messaging/index.html).
 *
 * The socket (connect, reconnect, sync, outbox, token refresh) is
 * biogram-client.js; this file only draws what it reports. REST calls (chat
 * list, history pages, user search, new chats, a replied-to message not on
 * screen) go with the Django session and its CSRF token. Every piece of user
 * text reaches the DOM as text: nodes are built with el() below, never from
 * HTML strings.
 *
 * Each bubble has a menu (⋯): reactions, reply, and on one's own messages
 * edit and delete. The composer then edits or replies (a bar above it says
 * which; Escape or Cancel ends it). Under each of one's own messages a tick
 * says Sent (✓), Delivered (✓✓) or Seen (blue ✓✓), for every other member;
 * under the latest, "Delivered to N" / "Seen by N" in a group.
 */

import { BiogramSocket, sessionTokenSource } from "./biogram-client.js";

const PAGE_SIZE = 40;
const QUICK_EMOJI = ["👍", "❤️", "😂", "😮", "😢", "🎉"];
const SNIPPET = 80;
const boot = JSON.parse(document.getElementById("biogram-boot").textContent);
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const me = boot.userId;
const $ = (id) => document.getElementById(id);

const client = new BiogramSocket({
  getToken: sessionTokenSource({ csrfToken }),
  storage: window.localStorage,
  storageKey: `biogram-outbox:${me}`,
});
window.biogram = { client }; // handy in the browser console

const chats = new Map(); // chatId -> chat object of the REST API, kept current
const online = new Set(); // user ids
const typists = new Map(); // chatId -> Map(userId -> timer)
let openChatId = null;
let openSerial = 0; // discards answers for a chat that is no longer open
const history = { oldestSeq: null, hasMore: false, loading: false };
const shown = new Map(); // messageId -> the message shown in the open chat (its newest copy)
const originals = new Map(); // messageId -> a replied-to message fetched because it is not shown
const composer = { mode: null, message: null }; // mode: "edit" | "reply" | null

// ---------------------------------------------------------------- helpers

/** A DOM element; strings become text nodes, so user text is never parsed as HTML. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) sessionEnded();
  if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}`);
  return response.json();
}

function usernameOf(userId) {
  for (const chat of chats.values()) {
    const member = chat.members.find((m) => m.id === userId);
    if (member) return member.username;
  }
  return `user ${userId}`;
}

function others(chat) {
  return chat.members.filter((m) => m.id !== me);
}

function chatTitle(chat) {
  if (chat.title) return chat.title;
  const names = others(chat).map((m) => m.username);
  return names.length ? names.join(", ") : "Only you";
}

function isOnline(chat) {
  return others(chat).some((m) => online.has(m.id));
}

function activity(chat) {
  return Date.parse((chat.lastMessage && chat.lastMessage.createdAt) || chat.createdAt);
}

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function pageVisible() {
  return document.visibilityState === "visible";
}

function upsertChat(chat) {
  const known = chats.get(chat.id);
  if (known && known.lastMessage && chat.lastMessage) {
    if (Number(known.lastMessage.seq) > Number(chat.lastMessage.seq)) {
      chat.lastMessage = known.lastMessage;
    }
  }
  chats.set(chat.id, chat);
  const seq = chat.lastMessage ? chat.lastMessage.seq : 0;
  if (chat.id !== openChatId) client.track(chat.id, seq, chat.rev);
  const self = chat.members.find((m) => m.id === me);
  if (chat.lastMessage && (!self || Number(self.lastDeliveredSeq || 0) < Number(seq))) {
    client.delivered(chat.id, seq); // shown in the chat list, and not yet reported
  }
  return chat;
}

async function fetchChat(chatId) {
  try {
    upsertChat(await api(`/api/chats/${chatId}/`));
    renderChatList();
  } catch (error) {
    console.warn("biogram: chat", chatId, error);
  }
}

// ---------------------------------------------------------------- connection indicator

let countdown = null;

function renderConnection({ state, nextAttemptAt, reason }) {
  const box = $("connection");
  const label = $("connection-label");
  clearInterval(countdown);
  box.dataset.state = state;
  $("retry-now").hidden = state !== "reconnecting";
  if (state === "connected") {
    box.dataset.tone = "green";
    label.textContent = "Connected";
  } else if (state === "offline") {
    box.dataset.tone = "red";
    label.textContent = reason === "unauthorized" ? "Offline: please log in again" : "Offline";
  } else if (state === "connecting") {
    box.dataset.tone = "amber";
    label.textContent = client.attempt ? "Reconnecting…" : "Connecting…";
  } else {
    box.dataset.tone = "amber";
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((nextAttemptAt - Date.now()) / 1000));
      label.textContent = `Reconnecting in ${seconds} s…`;
    };
    tick();
    countdown = setInterval(tick, 250);
  }
}

function sessionEnded({ reason } = {}) {
  const why = {
    logged_out: "You were logged out (here or in another tab).",
    banned: "This account was banned.",
  };
  $("session-ended-text").textContent = why[reason] || "Your session has ended.";
  $("session-ended").hidden = false;
}

// ---------------------------------------------------------------- chat list

function renderChatList() {
  const list = $("chat-list");
  const sorted = [...chats.values()].sort((a, b) => activity(b) - activity(a) || b.id - a.id);
  list.replaceChildren(
    ...sorted.map((chat) => {
      const last = chat.lastMessage;
      let preview = "No messages yet";
      if (last) {
        const who = last.senderId === me ? "You" : usernameOf(last.senderId);
        preview = `${who}: ${last.deleted ? "message deleted" : last.text}`;
      }
      return el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: chat.id === openChatId ? "chat-item open" : "chat-item",
            dataset: { chatId: chat.id },
            "aria-current": chat.id === openChatId ? "true" : null,
            onclick: () => openChat(chat.id),
          },
          el("span", {
            class: isOnline(chat) ? "presence online" : "presence",
            title: isOnline(chat) ? "online" : "offline",
          }),
          el(
            "span",
            { class: "chat-text" },
            el("span", { class: "chat-name" }, chatTitle(chat)),
            el("span", { class: "chat-preview" }, preview),
          ),
          chat.unreadCount ? el("span", { class: "unread" }, String(chat.unreadCount)) : null,
        ),
      );
    }),
  );
  $("no-chats").hidden = chats.size > 0;
  if (openChatId && chats.has(openChatId)) renderChatHeader(chats.get(openChatId));
}

// ---------------------------------------------------------------- chat box

function renderChatHeader(chat) {
  $("chat-title").textContent = chatTitle(chat);
  $("chat-members").textContent = chat.isDirect
    ? isOnline(chat)
      ? "online"
      : "offline"
    : `${chat.members.length} members`;
  $("chat-presence").className = isOnline(chat) ? "presence online" : "presence";
}

function snippet(text) {
  return text.length > SNIPPET ? `${text.slice(0, SNIPPET - 1)}…` : text;
}

function messageNode(message) {
  const mine = message.senderId === me;
  const chat = chats.get(message.chatId);
  const node = el(
    "li",
    {
      class: `message ${mine ? "mine" : "theirs"}${message.deleted ? " deleted" : ""}`,
      dataset: {
        id: message.id,
        seq: message.seq,
        rev: message.rev || "0",
        clientId: message.clientMessageId || "",
        replyTo: message.replyTo ? message.replyTo.id : "",
      },
    },
    !mine && chat && !chat.isDirect
      ? el("span", { class: "sender" }, usernameOf(message.senderId))
      : null,
    message.replyTo ? quoteNode(message) : null,
    el("span", { class: "text" }, message.deleted ? "Message deleted" : message.text),
    reactionsNode(message),
    el(
      "span",
      { class: "meta" },
      message.editedAt && !message.deleted ? el("span", { class: "edited" }, "edited") : null,
      el("time", { datetime: message.createdAt }, timeOf(message.createdAt)),
      mine && !message.deleted ? el("span", { class: "tick", dataset: { state: "sent" } }) : null,
    ),
    message.deleted
      ? null
      : el(
          "button",
          {
            type: "button",
            class: "menu-button",
            "aria-label": "Message actions",
            "aria-haspopup": "true",
            onclick: (event) => {
              event.stopPropagation();
              openMenu(node, message);
            },
          },
          "⋯",
        ),
  );
  return node;
}

/** The quoted original of a reply: who and what, or that it was deleted; click to go there. */
function quoteNode(message) {
  const id = message.replyTo.id;
  const original = shown.get(id) || originals.get(id);
  let who = "";
  let what = "…";
  if (original) {
    who = original.senderId === me ? "You" : usernameOf(original.senderId);
    what = original.deleted ? "Original deleted" : snippet(original.text);
  } else {
    fetchOriginal(message.chatId, id);
  }
  return el(
    "button",
    {
      type: "button",
      class: original && original.deleted ? "quote gone" : "quote",
      dataset: { quotes: id },
      onclick: () => scrollToMessage(id),
    },
    who ? el("span", { class: "quote-sender" }, who) : null,
    el("span", { class: "quote-text" }, what),
  );
}

async function fetchOriginal(chatId, messageId) {
  if (originals.has(messageId)) return;
  originals.set(messageId, null); // asked once
  try {
    const message = client.freshest(await api(`/api/chats/${chatId}/messages/${messageId}/`));
    originals.set(messageId, message);
    refreshQuotes(messageId);
  } catch (error) {
    console.warn("biogram: message", messageId, error);
  }
}

function refreshQuotes(messageId) {
  for (const node of $("message-list").querySelectorAll(
    `li[data-reply-to="${CSS.escape(messageId)}"]`,
  )) {
    const message = shown.get(node.dataset.id);
    if (message) node.querySelector(".quote").replaceWith(quoteNode(message));
  }
}

/** Go to a message of the open chat, loading older pages until it is there. */
async function scrollToMessage(messageId) {
  const find = () => $("message-list").querySelector(`li[data-id="${CSS.escape(messageId)}"]`);
  for (let pages = 0; !find() && history.hasMore && pages < 20; pages += 1) await loadOlder();
  const node = find();
  if (!node) return;
  node.scrollIntoView({ block: "center" });
  node.classList.add("flash");
  setTimeout(() => node.classList.remove("flash"), 1500);
}

function reactionsNode(message) {
  const reactions = message.deleted ? [] : message.reactions || [];
  if (!reactions.length) return null;
  return el(
    "span",
    { class: "reactions" },
    reactions.map(({ emoji, userIds }) => {
      const mine = userIds.includes(me);
      const names = userIds.map((id) => (id === me ? "you" : usernameOf(id))).join(", ");
      return el(
        "button",
        {
          type: "button",
          class: mine ? "reaction mine" : "reaction",
          title: names,
          "aria-pressed": mine ? "true" : "false",
          dataset: { emoji },
          onclick: () => react(message, emoji, !mine),
        },
        `${emoji} ${userIds.length}`,
      );
    }),
  );
}

function react(message, emoji, on) {
  if (!client.react(message.chatId, message.id, emoji, on)) notice("Offline: try again once connected.");
}

// ---------------------------------------------------------------- a bubble's menu

let menu = null; // {node, element}

function closeMenu() {
  if (menu) menu.element.remove();
  menu = null;
}

function openMenu(node, message) {
  const again = menu && menu.node === node;
  closeMenu();
  if (again) return;
  const current = shown.get(message.id) || message;
  const mine = current.senderId === me;
  const myEmoji = new Set(
    (current.reactions || []).filter((r) => r.userIds.includes(me)).map((r) => r.emoji),
  );
  const item = (label, action, extra = {}) =>
    el(
      "button",
      {
        type: "button",
        role: "menuitem",
        ...extra,
        onclick: (event) => {
          event.stopPropagation();
          action(event);
        },
      },
      label,
    );
  const element = el(
    "div",
    { class: "message-menu", role: "menu" },
    el(
      "div",
      { class: "emoji-picker", "aria-label": "React" },
      QUICK_EMOJI.map((emoji) =>
        item(emoji, () => {
          closeMenu();
          react(current, emoji, !myEmoji.has(emoji));
        }, { class: myEmoji.has(emoji) ? "pick mine" : "pick", dataset: { emoji } }),
      ),
    ),
    item("Reply", () => {
      closeMenu();
      startComposer("reply", current);
    }, { class: "reply" }),
    mine
      ? item("Edit", () => {
          closeMenu();
          startComposer("edit", current);
        }, { class: "edit" })
      : null,
    mine
      ? item("Delete", (event) => {
          const button = event.currentTarget;
          if (!button.classList.contains("confirm")) {
            button.classList.add("confirm");
            button.textContent = "Delete for everyone?";
            return;
          }
          closeMenu();
          if (!client.deleteMessage(current.chatId, current.id)) {
            notice("Offline: try again once connected.");
          }
        }, { class: "delete" })
      : null,
  );
  node.append(element);
  menu = { node, element };
}

document.addEventListener("click", (event) => {
  if (menu && !menu.element.contains(event.target)) closeMenu();
});

function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => {
    box.hidden = true;
  }, 4000);
}

// ---------------------------------------------------------------- composer: edit and reply

function startComposer(mode, message) {
  composer.mode = mode;
  composer.message = message;
  const who = message.senderId === me ? "yourself" : usernameOf(message.senderId);
  $("composer-context-text").textContent =
    mode === "edit" ? "Editing your message" : `Replying to ${who}: ${snippet(message.text)}`;
  $("composer-context").hidden = false;
  const box = $("composer-text");
  if (mode === "edit") box.value = message.text;
  box.focus();
}

function endComposer() {
  if (composer.mode === "edit") $("composer-text").value = "";
  composer.mode = null;
  composer.message = null;
  $("composer-context").hidden = true;
}

/** Insert a message in seq order; a message already shown is replaced by a newer copy only. */
function showMessage(message) {
  const list = $("message-list");
  message = client.freshest(message);
  const existing = list.querySelector(`li[data-id="${CSS.escape(message.id)}"]`);
  if (existing) {
    if (Number(message.rev || 0) > Number(existing.dataset.rev)) replaceMessage(message);
    return;
  }
  shown.set(message.id, message);
  const node = messageNode(message);
  const seq = Number(message.seq);
  const after = [...list.children].find((li) => Number(li.dataset.seq) > seq);
  list.insertBefore(node, after || null);
  refreshQuotes(message.id);
}

/** Draw a newer copy of a message already shown (edited, deleted, restored, reactions). */
function replaceMessage(message) {
  const node = $("message-list").querySelector(`li[data-id="${CSS.escape(message.id)}"]`);
  if (!node || Number(message.rev || 0) <= Number(node.dataset.rev)) return;
  shown.set(message.id, message);
  if (menu && menu.node === node) closeMenu();
  node.replaceWith(messageNode(message));
  if (composer.message && composer.message.id === message.id) {
    if (message.deleted) endComposer();
    else composer.message = message;
  }
  refreshQuotes(message.id);
  renderReceipt();
}

function showPending(item) {
  $("pending-list").append(
    el(
      "li",
      { class: "message mine pending", dataset: { clientId: item.clientMessageId } },
      el("span", { class: "text" }, item.text),
      el("span", { class: "meta" }, el("span", { class: "status" }, "Sending…")),
    ),
  );
}

function pendingNode(clientMessageId) {
  return $("pending-list").querySelector(`li[data-client-id="${CSS.escape(clientMessageId)}"]`);
}

/** Each of my messages' tick (Sent, Delivered, Seen: by every other member), and under the
 * latest one "Sent", "Delivered" / "Delivered to N", "Seen" / "Seen by N". */
function renderReceipt() {
  document.querySelectorAll("#message-list .receipt").forEach((node) => node.remove());
  const chat = chats.get(openChatId);
  const mine = [...$("message-list").querySelectorAll("li.mine")];
  if (!chat || !mine.length) return;
  const members = others(chat);
  const readSeq = (m) => Number(m.lastReadSeq || 0);
  const deliveredSeq = (m) => Math.max(Number(m.lastDeliveredSeq || 0), readSeq(m));
  for (const node of mine) {
    const tick = node.querySelector(".tick");
    if (!tick) continue;
    const seq = Number(node.dataset.seq);
    let state = "sent";
    if (members.length && members.every((m) => readSeq(m) >= seq)) state = "seen";
    else if (members.length && members.every((m) => deliveredSeq(m) >= seq)) state = "delivered";
    tick.dataset.state = state;
    tick.textContent = state === "sent" ? "✓" : "✓✓";
    tick.title = state[0].toUpperCase() + state.slice(1);
  }
  const latest = mine[mine.length - 1];
  const seq = Number(latest.dataset.seq);
  const readers = members.filter((m) => readSeq(m) >= seq).length;
  const reached = members.filter((m) => deliveredSeq(m) >= seq).length;
  let text = "Sent";
  if (readers) text = chat.isDirect ? "Seen" : `Seen by ${readers}`;
  else if (reached) text = chat.isDirect ? "Delivered" : `Delivered to ${reached}`;
  latest.querySelector(".meta").append(el("span", { class: "receipt" }, text));
}

function renderTyping() {
  const names = [...(typists.get(openChatId) || new Map()).keys()].map(usernameOf);
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length > 1) text = `${names.join(" and ")} are typing…`;
  $("typing").textContent = text;
}

function setTyping(chatId, userId, isTyping, expiresInMs = 3000) {
  if (!typists.has(chatId)) typists.set(chatId, new Map());
  const inChat = typists.get(chatId);
  clearTimeout(inChat.get(userId));
  if (isTyping) {
    // The server says when typing stops; this only covers a lost `false`.
    inChat.set(
      userId,
      setTimeout(() => setTyping(chatId, userId, false), expiresInMs + 1000),
    );
  } else {
    inChat.delete(userId);
  }
  if (chatId === openChatId) renderTyping();
}

function nearBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function markRead() {
  const chat = chats.get(openChatId);
  if (!chat || !pageVisible()) return;
  const theirs = [...$("message-list").querySelectorAll("li.theirs")];
  const latest = theirs[theirs.length - 1];
  if (!latest || Number(latest.dataset.seq) <= Number(chat.lastReadSeq)) return;
  chat.lastReadSeq = latest.dataset.seq;
  client.read(chat.id, latest.dataset.id);
  if (chat.lastMessage && Number(chat.lastReadSeq) >= Number(chat.lastMessage.seq)) {
    chat.unreadCount = 0;
    renderChatList();
  }
}

async function openChat(chatId) {
  const chat = chats.get(chatId);
  if (!chat) return;
  const serial = ++openSerial;
  openChatId = chatId;
  history.oldestSeq = null;
  history.hasMore = false;
  history.loading = true;
  window.location.hash = `chat-${chatId}`;
  $("no-chat").hidden = true;
  $("chat-box").hidden = false;
  $("message-list").replaceChildren();
  $("pending-list").replaceChildren();
  shown.clear();
  closeMenu();
  endComposer();
  client.pending(chatId).forEach(showPending);
  $("history-status").textContent = "Loading…";
  renderChatList();
  renderTyping();
  $("composer-text").focus();
  try {
    const page = await api(`/api/chats/${chatId}/messages/?limit=${PAGE_SIZE}`);
    if (serial !== openSerial) return;
    page.results.forEach(showMessage);
    history.hasMore = page.hasMore;
    history.oldestSeq = page.results.length ? page.results[0].seq : null;
    const last = page.results[page.results.length - 1];
    if (last) {
      client.track(chatId, last.seq);
      client.delivered(chatId, last.seq);
    }
    $("history-status").textContent = history.hasMore ? "" : "This is the start of the chat.";
  } catch (error) {
    if (serial === openSerial) $("history-status").textContent = "Could not load the history.";
    return;
  } finally {
    if (serial === openSerial) history.loading = false;
  }
  renderReceipt();
  scrollToBottom();
  markRead();
  fillScreen();
}

/** Older pages, through the REST history, when the reader scrolls to the top. */
async function loadOlder() {
  if (history.loading || !history.hasMore || !history.oldestSeq) return;
  const serial = openSerial;
  const chatId = openChatId;
  history.loading = true;
  $("history-status").textContent = "Loading earlier messages…";
  try {
    const page = await api(
      `/api/chats/${chatId}/messages/?before=${history.oldestSeq}&limit=${PAGE_SIZE}`,
    );
    if (serial !== openSerial) return;
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    page.results.forEach(showMessage);
    box.scrollTop = box.scrollHeight - fromBottom; // keep the reader's place
    history.hasMore = page.hasMore;
    if (page.results.length) history.oldestSeq = page.results[0].seq;
    $("history-status").textContent = history.hasMore ? "" : "This is the start of the chat.";
  } catch {
    if (serial === openSerial) $("history-status").textContent = "Could not load earlier messages.";
  } finally {
    if (serial === openSerial) history.loading = false;
  }
  fillScreen();
}

/** Keep loading older pages while they do not fill the box (nothing to scroll yet). */
function fillScreen() {
  const box = $("messages");
  if (history.hasMore && box.scrollHeight <= box.clientHeight) loadOlder();
}

// ---------------------------------------------------------------- socket events

client.on("state", renderConnection);

client.on("unauthorized", sessionEnded);

client.on("ready", (data) => {
  online.clear();
  data.online.forEach((id) => online.add(id));
  const member = new Set(data.chats);
  for (const chatId of [...chats.keys()]) {
    if (!member.has(chatId)) removeChat(chatId);
  }
  for (const chatId of data.chats) {
    if (!chats.has(chatId)) fetchChat(chatId);
  }
  renderChatList();
});

client.on("message", (message) => {
  const chat = chats.get(message.chatId);
  if (!chat) {
    fetchChat(message.chatId);
    return;
  }
  client.delivered(message.chatId, client.lastSeqOf(message.chatId) ?? message.seq);
  if (!chat.lastMessage || Number(message.seq) >= Number(chat.lastMessage.seq)) {
    chat.lastMessage = message;
  }
  const theirs = message.senderId !== me;
  const reading = message.chatId === openChatId && pageVisible();
  if (theirs && !reading && Number(message.seq) > Number(chat.lastReadSeq)) chat.unreadCount += 1;
  if (theirs) setTyping(message.chatId, message.senderId, false);
  if (message.chatId === openChatId) {
    const follow = nearBottom() || !theirs;
    showMessage(message);
    renderReceipt();
    if (follow) scrollToBottom();
    markRead();
  }
  renderChatList();
});

client.on("pending", (item) => {
  if (item.chatId === openChatId) {
    showPending(item);
    scrollToBottom();
  }
});

client.on("sent", (item) => {
  const node = pendingNode(item.clientMessageId);
  if (node) node.remove();
});

client.on("failed", (item, error) => {
  const node = pendingNode(item.clientMessageId);
  if (!node) return;
  node.classList.replace("pending", "failed");
  node.querySelector(".status").textContent = `Not sent: ${error.message}`;
});

client.on("typing", (data) => {
  if (data.userId !== me) setTyping(data.chatId, data.userId, data.isTyping, data.expiresInMs);
});

client.on("read", (data) => {
  const chat = chats.get(data.chatId);
  if (!chat) return;
  const member = chat.members.find((m) => m.id === data.userId);
  if (member && Number(data.seq) > Number(member.lastReadSeq || 0)) member.lastReadSeq = data.seq;
  if (member && Number(data.seq) > Number(member.lastDeliveredSeq || 0)) {
    member.lastDeliveredSeq = data.seq; // a read is delivered too
  }
  if (data.userId === me) {
    if (Number(data.seq) > Number(chat.lastReadSeq)) chat.lastReadSeq = data.seq;
    if (!chat.lastMessage || Number(chat.lastReadSeq) >= Number(chat.lastMessage.seq)) {
      chat.unreadCount = 0;
    }
    renderChatList();
  }
  if (data.chatId === openChatId) renderReceipt();
});

client.on("presence", ({ userId, online: isUp }) => {
  if (isUp) online.add(userId);
  else online.delete(userId);
  renderChatList();
});

client.on("chat", ({ chatId, event }) => {
  if (event === "added") fetchChat(chatId);
  else removeChat(chatId);
});

/** A newer copy of a message (an update, or a deletion as a copy): list preview and chat. */
function changed(message) {
  const chat = chats.get(message.chatId);
  if (chat && chat.lastMessage && chat.lastMessage.id === message.id) {
    chat.lastMessage = message;
    renderChatList();
  }
  if (originals.get(message.id)) originals.set(message.id, message);
  if (message.chatId !== openChatId) return;
  if (shown.has(message.id)) replaceMessage(message);
  else refreshQuotes(message.id); // an original not on screen, quoted by a reply that is
}

client.on("update", changed);

client.on("delete", ({ chatId, messageId, seq, rev }) => {
  const chat = chats.get(chatId);
  const known =
    shown.get(messageId) ||
    originals.get(messageId) ||
    (chat && chat.lastMessage && chat.lastMessage.id === messageId ? chat.lastMessage : null);
  const base = known || { id: messageId, chatId, senderId: null, createdAt: new Date().toISOString() };
  changed({ ...base, seq, rev, deleted: true, text: null, reactions: [] });
});

client.on("delivered", (data) => {
  const chat = chats.get(data.chatId);
  if (!chat) return;
  const member = chat.members.find((m) => m.id === data.userId);
  if (member && Number(data.seq) > Number(member.lastDeliveredSeq || 0)) {
    member.lastDeliveredSeq = data.seq;
  }
  if (data.chatId === openChatId) renderReceipt();
});

client.on("synced", (summary) => {
  // More was missed than `sync` replays: show the latest page from the REST history.
  if (openChatId && summary[openChatId] && summary[openChatId].hasMore) openChat(openChatId);
});

function removeChat(chatId) {
  chats.delete(chatId);
  if (chatId === openChatId) {
    openChatId = null;
    $("chat-box").hidden = true;
    $("no-chat").hidden = false;
  }
  renderChatList();
}

// ---------------------------------------------------------------- composer and search

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const box = $("composer-text");
  if (!openChatId || !box.value.trim()) return;
  if (composer.mode === "edit") {
    const message = composer.message;
    if (box.value !== message.text && !client.edit(message.chatId, message.id, box.value)) {
      notice("Offline: try again once connected.");
      return;
    }
    endComposer();
    return;
  }
  const replyTo = composer.mode === "reply" ? composer.message.id : null;
  client.send(openChatId, box.value, { replyTo });
  box.value = "";
  endComposer();
});

$("composer-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  } else if (event.key === "Escape" && composer.mode) {
    endComposer();
  }
});

$("composer-context-cancel").addEventListener("click", () => {
  endComposer();
  $("composer-text").focus();
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeMenu();
});

$("composer-text").addEventListener("input", (event) => {
  if (!openChatId) return;
  if (event.target.value.trim()) client.typing(openChatId);
  else client.stopTyping(openChatId);
});

$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 80) loadOlder();
});

document.addEventListener("visibilitychange", markRead);

let searchTimer = null;
$("user-search").addEventListener("input", (event) => {
  clearTimeout(searchTimer);
  const query = event.target.value.trim();
  if (!query) {
    $("user-results").replaceChildren();
    return;
  }
  searchTimer = setTimeout(async () => {
    try {
      const users = await api(`/api/users/?search=${encodeURIComponent(query)}`);
      $("user-results").replaceChildren(
        ...(users.length
          ? users.map((user) =>
              el(
                "li",
                {},
                el(
                  "button",
                  { type: "button", class: "user-item", onclick: () => startChat(user) },
                  user.username,
                ),
              ),
            )
          : [el("li", { class: "muted" }, "Nobody by that name.")]),
      );
    } catch {
      $("user-results").replaceChildren(el("li", { class: "muted" }, "Search failed."));
    }
  }, 200);
});

async function startChat(user) {
  const chat = upsertChat(await api("/api/chats/", { method: "POST", body: { memberIds: [user.id] } }));
  $("user-search").value = "";
  $("user-results").replaceChildren();
  await openChat(chat.id);
}

$("retry-now").addEventListener("click", () => client.reconnectNow());

// ---------------------------------------------------------------- start

async function start() {
  try {
    (await api("/api/chats/")).forEach(upsertChat);
  } catch (error) {
    console.warn("biogram: chat list", error);
  }
  renderChatList();
  client.connect();
  const wanted = window.location.hash.replace(/^#chat-/, "");
  if (wanted && chats.has(wanted)) openChat(wanted);
}

start();

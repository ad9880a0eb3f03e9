// Web Push for the Biogram page: `enablePush` subscribes this browser, `disablePush` undoes it.
//
//   import { enablePush, disablePush } from "/static/biogram-push.js";
//   const state = await enablePush({ csrfToken });   // "on", "denied" or "unsupported"
//
// The service worker (/biogram-sw.js) shows what the server pushes; the server pushes a chat's new
// messages when none of the user's devices has taken them within NOTIFY_DELAY_MS (docs/protocol.md).

const WORKER = "/biogram-sw.js";

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function call(method, path, csrfToken, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken || "" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let detail = `${response.status}`;
    try {
      detail = (await response.json()).detail || detail;
    } catch {}
    throw new Error(`${method} ${path}: ${detail}`);
  }
  return response.status === 204 ? null : response.json();
}

// Turn notifications on for this browser: register the service worker, ask for permission if
// the user has not answered yet, subscribe with the server's VAPID key and give the server the
// subscription. "on", "denied" (the user said no, now or before) or "unsupported".
export async function enablePush({ csrfToken } = {}) {
  if (!pushSupported()) return "unsupported";
  let permission = Notification.permission;
  if (permission === "default") permission = await Notification.requestPermission();
  if (permission !== "granted") return "denied";
  const registration = await navigator.serviceWorker.register(WORKER, { scope: "/" });
  await navigator.serviceWorker.ready;
  const { publicKey } = await call("GET", "/api/push/key/", csrfToken);
  let subscription = await registration.pushManager.getSubscription();
  const key = subscription?.options?.applicationServerKey;
  if (subscription && key && !sameKey(new Uint8Array(key), keyBytes(publicKey))) {
    await subscription.unsubscribe(); // made for another server key: it would be refused
    subscription = null;
  }
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(publicKey),
    });
  }
  const json = typeof subscription.toJSON === "function" ? subscription.toJSON() : subscription;
  await call("POST", "/api/push/subscriptions/", csrfToken, {
    endpoint: json.endpoint,
    keys: { p256dh: json.keys.p256dh, auth: json.keys.auth },
  });
  return "on";
}

// Turn them off for this browser: the server forgets the subscription and the browser drops it.
export async function disablePush({ csrfToken } = {}) {
  if (!pushSupported()) return "unsupported";
  const registration = await navigator.serviceWorker.getRegistration("/");
  const subscription = registration && (await registration.pushManager.getSubscription());
  if (!subscription) return "off";
  await call("DELETE", "/api/push/subscriptions/", csrfToken, { endpoint: subscription.endpoint });
  await subscription.unsubscribe();
  return "off";
}

// Whether this browser is subscribed now: "on", "off", "denied" or "unsupported".
export async function pushState() {
  if (!pushSupported()) return "unsupported";
  if (Notification.permission === "denied") return "denied";
  const registration = await navigator.serviceWorker.getRegistration("/");
  const subscription = registration && (await registration.pushManager.getSubscription());
  return subscription && Notification.permission === "granted" ? "on" : "off";
}

function sameKey(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

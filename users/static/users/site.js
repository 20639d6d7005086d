// A page that came back with errors: focus moves to its summary, so a screen reader reads the errors
// first and a keyboard user starts from them (WCAG 3.3.1). It overrides a field's autofocus.
document.addEventListener("DOMContentLoaded", () => {
  const summary = document.getElementById("error-summary");
  if (summary) summary.focus();
});

// A logged-in page warns before its session ends for lack of activity, with a way to keep it
// (WCAG 2.2.1): typing is no request, so a slow form would otherwise be lost at the idle timeout.
// Near the session's time limit (REFRESH_TOKEN_LIFETIME) nothing can keep it: the warning says so.
// Once the end has passed, or the server refuses to keep it, the warning says it has ended.
// The session is the browser's, not the tab's: every page tells the others (localStorage) when it
// now ends, so a tab left open does not warn, or say "ended", while another one is in use.
document.addEventListener("DOMContentLoaded", () => {
  const warning = document.getElementById("idle-warning");
  if (!warning) return;
  const text = document.getElementById("idle-warning-text");
  const stay = document.getElementById("idle-stay");
  const login = document.getElementById("idle-login");
  const SHARED = "simplebank.session-ends";  // {"session": id, "at": epoch ms, "extensible": bool}
  const session = warning.dataset.session;  // this page's log-in: another one in this browser is not it
  let over = false;  // once this page has said its session ended, it keeps saying so
  const MAX_DELAY_MS = 2147483647;  // setTimeout runs a longer delay at once
  let timers = [];
  const later = (seconds, action) => {
    const ms = Math.max(0, seconds * 1000);
    if (ms > MAX_DELAY_MS) {
      timers.push(setTimeout(() => later(seconds - MAX_DELAY_MS / 1000, action), MAX_DELAY_MS));
    } else {
      timers.push(setTimeout(action, ms));
    }
  };
  const minutes = (seconds) => {
    const n = Math.max(1, Math.round(seconds / 60));
    return `${n} minute${n === 1 ? "" : "s"}`;
  };
  const ended = () => {
    over = true;
    timers.forEach(clearTimeout);
    text.textContent = "Your session has ended. What you typed is still on this page: copy it before you log in again.";
    stay.hidden = true;
    login.hidden = false;
    warning.hidden = false;
  };
  const schedule = (endsIn, extensible) => {
    timers.forEach(clearTimeout);
    timers = [];
    warning.hidden = true;
    const lead = Math.min(120, endsIn / 2);
    later(endsIn - lead, () => {
      text.textContent = extensible
        ? `Without activity, you will be logged out in about ${minutes(lead)}, and what you typed on this page will be lost.`
        : `Your session reaches its time limit in about ${minutes(lead)}: finish or copy what you are typing, then log in again.`;
      stay.hidden = !extensible;
      login.hidden = true;
      warning.hidden = false;
      if (extensible) stay.focus();
    });
    later(endsIn, ended);
  };
  const known = (endsIn, extensible) => {  // this tab learnt when the session ends: the others too
    schedule(endsIn, extensible);
    try {
      localStorage.setItem(SHARED, JSON.stringify({ session, at: Date.now() + endsIn * 1000, extensible }));
    } catch (error) { /* storage refused (private mode): this tab still warns on its own */ }
  };
  window.addEventListener("storage", (event) => {
    if (over || event.key !== SHARED || !event.newValue) return;
    try {
      const shared = JSON.parse(event.newValue);
      if (shared.session !== session) return;
      schedule((Number(shared.at) - Date.now()) / 1000, shared.extensible === true);
    } catch (error) { /* not ours */ }
  });
  known(Number(warning.dataset.endsIn), warning.dataset.extensible === "true");
  warning.dataset.scheduled = "true";  // the page's timers run from here
  stay.addEventListener("click", async () => {
    warning.hidden = true;
    warning.setAttribute("aria-busy", "true");  // until the session's new end is known
    try {
      // A request of its own that counts as activity and says when the session now ends; a
      // refusal means it has ended. (Not this page again: its URL may be a one-time link's.)
      const url = `${warning.dataset.sessionUrl}?session=${encodeURIComponent(session)}`;
      const answer = await fetch(url, { credentials: "same-origin", redirect: "manual" });
      const state = answer.ok ? await answer.json() : null;
      if (state) known(Number(state.ends_in), state.extensible === true);
      else ended();
    } catch (error) {
      ended();
    }
    warning.removeAttribute("aria-busy");
  });
});

// A page that came back with errors: focus moves to its summary, so a screen reader reads the errors
// first and a keyboard user starts from them (WCAG 3.3.1). It overrides a field's autofocus.
document.addEventListener("DOMContentLoaded", () => {
  const summary = document.getElementById("error-summary");
  if (summary) summary.focus();
});

// A logged-in page warns before its session ends for lack of activity, with a way to keep it
// (WCAG 2.2.1): typing is no request, so a slow form would otherwise be lost at the idle timeout.
document.addEventListener("DOMContentLoaded", () => {
  const warning = document.getElementById("idle-warning");
  if (!warning) return;
  const stay = document.getElementById("idle-stay");
  let timer;
  const schedule = (endsIn) => {
    clearTimeout(timer);
    const lead = Math.min(120, endsIn / 2);
    timer = setTimeout(() => { warning.hidden = false; stay.focus(); }, Math.max(0, endsIn - lead) * 1000);
  };
  schedule(Number(warning.dataset.endsIn));
  stay.addEventListener("click", async () => {
    warning.hidden = true;
    try {
      // Any logged-in page counts as activity; its own warning says when the session now ends.
      const answer = await fetch(warning.dataset.keepUrl, { credentials: "same-origin", redirect: "manual" });
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.getElementById("idle-warning");
      if (fresh) schedule(Number(fresh.dataset.endsIn));
    } catch (error) {
      schedule(0);
    }
  });
});

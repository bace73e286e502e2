// Shared by every page: mark that scripts run (hides no-JS fallbacks) and submit
// selects marked data-autosubmit as soon as they change.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.requestSubmit());
  }
})();

// Staff console enhancements (the pages work without this file): a form marked data-once
// cannot be sent twice by a double click (the server records once anyway), and a form with
// data-confirm asks before it is sent.
"use strict";
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    ev.preventDefault();
    return;
  }
  if (form.hasAttribute("data-once")) {
    if (form.getAttribute("data-sent") === "1") {
      ev.preventDefault();
      return;
    }
    form.setAttribute("data-sent", "1");
  }
});

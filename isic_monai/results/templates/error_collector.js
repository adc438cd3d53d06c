window.addEventListener('error', function (event) {
  var box = document.getElementById('js-errors');
  var text = 'error: ' + event.message + ' (' + event.filename + ':' + event.lineno + ')\n';
  if (box) { box.textContent += text; } else { document.title = 'JS ERROR ' + text; }
});

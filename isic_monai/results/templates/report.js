(function () {
  function cellValue(row, index) {
    var cell = row.cells[index];
    var raw = cell.getAttribute('data-value');
    var num = parseFloat(raw);
    return { text: raw === null ? cell.textContent : raw, num: (raw === '' || isNaN(num)) ? null : num };
  }
  function sortTable(table, index, ascending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index), y = cellValue(b, index);
      if (x.num === null && y.num === null) { return x.text.localeCompare(y.text) * (ascending ? 1 : -1); }
      if (x.num === null) { return 1; }
      if (y.num === null) { return -1; }
      return (x.num - y.num) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.classList.remove('asc', 'desc');
      if (i === index) { th.classList.add(ascending ? 'asc' : 'desc'); }
    });
    table.setAttribute('data-sorted', table.tHead.rows[0].cells[index].getAttribute('data-column') + ':' +
                       (ascending ? 'asc' : 'desc'));
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.addEventListener('click', function () { sortTable(table, index, !th.classList.contains('asc')); });
    });
  });
  var match = /sort=([^:&]+)(?::(asc|desc))?/.exec(decodeURIComponent(window.location.hash));
  var table = document.getElementById('per-image-table');
  if (match && table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      if (th.getAttribute('data-column') === match[1]) { sortTable(table, index, match[2] !== 'desc'); }
    });
  }
  document.getElementById('js-status').setAttribute('data-ready', '1');
})();

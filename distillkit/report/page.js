(function(){
  document.documentElement.className += ' js';
  function key(cell){
    var v = cell.getAttribute('data-value');
    if (v !== null) { if (v === 'null') return null; var n = parseFloat(v); if (!isNaN(n) && /^-?[0-9.eE+-]+$/.test(v)) return n; return v.toLowerCase(); }
    return cell.textContent.trim().toLowerCase();
  }
  var tables = document.querySelectorAll('table.sortable');
  for (var t = 0; t < tables.length; t++) (function(table){
    var heads = table.tHead.rows[0].cells;
    for (var c = 0; c < heads.length; c++) (function(th, col){
      th.setAttribute('aria-sort', 'none'); th.tabIndex = 0;
      function sort(){
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(a, b){
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === y) return 0; if (x === null) return 1; if (y === null) return -1;
          return (x < y ? -1 : 1) * dir;
        });
        for (var h = 0; h < heads.length; h++) heads[h].setAttribute('aria-sort', 'none');
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        for (var r = 0; r < rows.length; r++) body.appendChild(rows[r]);
      }
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function(e){ if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); } });
    })(heads[c], c);
  })(tables[t]);
})();

#!/usr/bin/env python3
"""The protected policies' ratios (docs/results.md, "Cheap safety"), as the
median over several peer_bench runs of each binary, before and after.

    bench/peers/safety_table.py DIR

DIR holds before1/, before2/, ... and after1/, after2/, ..., each with the
peer_bench CSV of one run (cells fbuf-volatile, fbuf-read_only,
fbuf-copy_on_write, fbuf-thread and ring, both modes). Prints two Markdown
tables: the ratios within each run (median over runs, before -> after) and
the absolute buffers/s.
"""
import csv, glob, statistics, sys

if len(sys.argv) != 2:
    sys.exit('usage: safety_table.py DIR')
root=sys.argv[1]
def load(f):
    d={}
    for r in csv.DictReader(open(f)):
        if r['status']!='ok': continue
        d[(r['mode'],r['transport'],int(r['size_bytes']))]=(float(r['buffers_per_s_median']),float(r['p50_one_way_us'] or 'nan'))
    return d
sizes=[64,4096,65536,1048576,16777216]
def lab(s): return {64:'64 B',4096:'4 KiB',65536:'64 KiB',1048576:'1 MiB',16777216:'16 MiB'}[s]
rows=[('touch read_only/volatile','touch','fbuf-read_only','fbuf-volatile',0),
('touch copy_on_write/volatile','touch','fbuf-copy_on_write','fbuf-volatile',0),
('transport read_only/volatile','transport','fbuf-read_only','fbuf-volatile',0),
('transport copy_on_write/volatile','transport','fbuf-copy_on_write','fbuf-volatile',0),
('transport volatile/ring floor','transport','fbuf-volatile','ring',0),
('transport p50 volatile/ring floor','transport','fbuf-volatile','ring',1),
('touch volatile/ring floor','touch','fbuf-volatile','ring',0),
('transport thread/cross-process','transport','fbuf-thread','fbuf-volatile',0),
('touch thread/cross-process','touch','fbuf-thread','fbuf-volatile',0),
]
runs={k:[load(f) for f in sorted(glob.glob(f'{root}/{k}*/*.csv'))] for k in ('before','after')}
print('| ratio, same run (median of %d runs each) | '%len(runs['before'])+' | '.join(lab(s) for s in sizes)+' |')
print('|---|'+'---:|'*len(sizes))
for name,mode,a,b,i in rows:
    cells=[]
    for s in sizes:
        out=[]
        for k in ('before','after'):
            v=[]
            for d in runs[k]:
                if (mode,a,s) in d and (mode,b,s) in d and d[(mode,b,s)][i]>0: v.append(d[(mode,a,s)][i]/d[(mode,b,s)][i])
            out.append('%.3g'%statistics.median(v) if v else '-')
        cells.append(' → '.join(out))
    print('| '+name+' | '+' | '.join(cells)+' |')
# absolute
print()
print('| buffers/s, median of runs | '+' | '.join(lab(s) for s in sizes)+' |')
print('|---|'+'---:|'*len(sizes))
for mode in ('transport','touch'):
  for t in ('fbuf-volatile','fbuf-read_only','fbuf-copy_on_write','fbuf-thread','ring'):
    cells=[]
    for s in sizes:
        out=[]
        for k in ('before','after'):
            v=[d[(mode,t,s)][0] for d in runs[k] if (mode,t,s) in d]
            out.append('{:,.0f}'.format(statistics.median(v)) if v else '-')
        cells.append(' → '.join(out))
    print(f'| {mode} {t} | '+' | '.join(cells)+' |')

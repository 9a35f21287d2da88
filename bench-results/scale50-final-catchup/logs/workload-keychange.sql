\set s random(1, :rows)
UPDATE public.bench_keychange SET id = nextval('public.bench_keychange_id') WHERE slot = :s;

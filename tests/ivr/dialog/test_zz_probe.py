def test_probe(walk_to, flow, paths):
    assert set(paths) == set(flow.nodes), set(flow.nodes) ^ set(paths)
    for n in flow.nodes:
        d = walk_to(n)
        print(n, d.dialog.phase, d.dialog.deadline, d.play_id, d.dialog.slots.get("pending_ticket"))

"""What magicwan does when the world misbehaves: hostile or broken servers, careless callers and
deliverers, bad input, full disks, clocks that jump. Every PSK is still kept and no secret leaks.

Files are named by subject: ``test_server_*`` (what a server answers), ``test_careless_*`` (the
caller's own code), ``test_cli_*`` (the command line), ``test_bad_input``, ``test_journal_*``,
``test_secret_hygiene``, ``test_tls_verification``, ``test_load_with_faults``.
"""

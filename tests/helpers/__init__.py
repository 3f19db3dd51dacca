"""What the tests share, one module per kind of thing: personas, request bodies and inputs, the API calls, problem
assertions, money, run states built through the real services, deliberate corruption, admin clients, bulk rows.

The conftest files hold fixtures only; they import from here."""

"""Learning agents: ``networks`` (NatureCNN, actor, twin critic), ``augment`` (random shift),
``td3`` (TD3Agent with an end-to-end CNN), ``ddpg`` (the DDPG baseline on the same machinery) and
``diagnostics`` (gradient / weight statistics)."""

from invoice_export.cli import main

main()
